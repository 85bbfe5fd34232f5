"""Errors caused by the user's input or environment.

The entry points print these as one clear message and exit non-zero, without a traceback:
the message itself says which key, file or folder is wrong and what was expected.
"""


class GenlabError(Exception):
    """Base class of every error that is the user's to fix, not a bug."""


class ConfigError(GenlabError, ValueError):
    """A config value has the wrong type, an unknown key, or an impossible value."""


class DatasetNotFoundError(GenlabError, FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


class CorruptDatasetError(GenlabError, ValueError):
    """A dataset file exists but is truncated or is not the file expected."""
