"""User-facing errors. The CLI prints these as one clear message, never a traceback."""


class PresafeError(Exception):
    """Base class for errors caused by user input (configs, data files, models)."""


class ConfigError(PresafeError):
    """A job config is invalid: the message names the file and the key path."""


class DataError(PresafeError):
    """A data file is malformed: the message names the file and the line."""
