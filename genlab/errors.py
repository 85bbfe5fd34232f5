"""Errors caused by the user's input or environment.

The entry points print these as one clear message and exit non-zero, without a traceback
(genlab/utils/failed_runs.py: `exit_on_user_error`): the message itself says which key, file or folder is
wrong and what was expected.
"""

import re

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


class RunInterrupted(BaseException):
    """A command stopped by a signal (Ctrl-C, a preemption's SIGTERM); the message says what was saved.

    A BaseException, as KeyboardInterrupt is: signal handlers raise it wherever the signal lands, and it must pass
    every `except Exception` and `except GenlabError` on its way (ours, that turn a bad input into one line with exit
    code 1, and libraries') to the entry point, which ends with 128 + the signal's number.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException, limit: int = 300) -> str:
    """An underlying error's message folded onto one line, to quote inside one of ours (a URL's password hidden)."""
    return without_passwords(" ".join(str(err).split()))[:limit] or type(err).__name__


# scheme://user:password@: the password runs to the last @ before a space (a password may hold / or @)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^:/@\s]*:)\S*@")


def without_passwords(text: str) -> str:
    """`text` with the password of each URL in it (`postgresql://user:secret@host/db`) shown as ***, for a message
    or a log line; also where the URL cannot be parsed (a port that is not a number)."""
    return _URL_PASSWORD.sub(r"\1***@", text)
