"""Errors a user can fix.

Every ``UPSError`` message says what was wrong, where (file, key, shape) and what to do.
The command line prints it without a traceback and exits with code 2.
"""


class UPSError(Exception):
    """Bad input from the user: a config, a command-line argument, a data file."""


class ConfigError(UPSError):
    """A configuration file or override is malformed."""


class DataError(UPSError):
    """A data file is missing, unreadable, or not in a layout UPS reads."""


class CheckpointError(UPSError):
    """A checkpoint is missing, damaged, unreadable, or does not fit the model it is loaded into."""
