"""Errors a user can act on: each message names the problem and the fix."""


class DimoError(Exception):
    """Base class of dimo's user-facing errors (the CLI prints them without a traceback)."""


class ConfigError(DimoError):
    """A configuration key, value or plugin name is wrong."""


class PluginError(DimoError):
    """A plugin is missing, broken, or registers a name another plugin already uses."""


class CheckpointError(DimoError):
    """A checkpoint is missing, malformed, or disagrees with the model or tokenizer."""


class NonFiniteLossError(DimoError):
    """Training produced a NaN or infinite loss."""


class Interrupted(DimoError):
    """SIGINT or SIGTERM stopped a run after it wrote a checkpoint; ``code`` is the exit status (128 + signal)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
