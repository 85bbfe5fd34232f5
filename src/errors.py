"""Errors caused by the user's input or environment.

The entry points print these as one clear message and exit non-zero, without a traceback:
the message itself says which key, file or folder is wrong and what was expected.
"""

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class GenlabError(Exception):
    """Base class of every error that is the user's to fix, not a bug."""


class ConfigError(GenlabError, ValueError):
    """A config value has the wrong type, an unknown key, or an impossible value."""


class DatasetNotFoundError(GenlabError, FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


class CorruptDatasetError(GenlabError, ValueError):
    """A dataset file exists but is truncated or is not the file expected."""


class RunInterrupted(GenlabError):
    """Training stopped by a signal (Ctrl-C, preemption) after saving its last checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException, limit: int = 300) -> str:
    """An underlying error's message folded onto one line, to quote inside one of ours."""
    return " ".join(str(err).split())[:limit] or type(err).__name__


def exit_on_user_error(entry_point: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point so that a GenlabError ends it as `error: <message>` and exit code 1, no traceback.

    An interrupted run exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell would.

    SystemExit is not an Exception, so Hydra's error handler lets it through untouched.
    """

    @functools.wraps(entry_point)
    def wrapper(*args, **kwargs) -> T:
        try:
            return entry_point(*args, **kwargs)
        except RunInterrupted as err:
            print(f"interrupted: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None
        except GenlabError as err:
            raise SystemExit(f"error: {err}") from None

    return wrapper
