"""Errors caused by the user's input or environment.

The entry points print these as one clear message and exit non-zero, without a traceback
(genlab/utils/failed_runs.py: `exit_on_user_error`): the message itself says which key, file or folder is
wrong and what was expected.
"""

from hydra.errors import CompactHydraException


class GenlabError(CompactHydraException):
    """Base class of every error that is the user's to fix, not a bug.

    A CompactHydraException: where one ends a Hydra sweep, Hydra prints its message, not a traceback.
    """


class ConfigError(GenlabError, ValueError):
    """A config value has the wrong type, an unknown key, or an impossible value."""


class DatasetNotFoundError(GenlabError, FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


class CorruptDatasetError(GenlabError, ValueError):
    """A dataset file exists but is truncated or is not the file expected."""


class FileRefusedError(GenlabError, OSError):
    """A file genlab reads or writes is not what it may touch (a link, a FIFO, a folder, too large), or the disk
    failed while writing it (full, read-only): nothing was written in its place."""


class RunInterrupted(GenlabError):
    """Training stopped by a signal (Ctrl-C, preemption) after saving its last checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException, limit: int = 300) -> str:
    """An underlying error's message folded onto one line, to quote inside one of ours."""
    return " ".join(str(err).split())[:limit] or type(err).__name__
