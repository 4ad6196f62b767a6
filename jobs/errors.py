"""User-facing errors. The CLI prints these as one clear message, never a traceback."""


class PresafeError(Exception):
    """Base class for errors caused by user input (configs, data files, models)."""


class ConfigError(PresafeError):
    """A job config is invalid: the message names the file and the key path (also in
    `key`, dotted, when one field is at fault: the HTTP API reports it as the location)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class DataError(PresafeError):
    """A data file is malformed: the message names the file and the line."""
