"""The errors saeinverse raises for bad user input; the CLI prints them as one line, no traceback."""


class SaeInverseError(Exception):
    """Base class: a problem the user can fix (bad config, missing artifact, offline hub name...)."""


class ConfigError(SaeInverseError, ValueError):
    """An unknown config key, a value of the wrong type, or a value outside the valid choices."""


class ModelLoadError(SaeInverseError):
    """A model or SAE could not be loaded (offline hub name, unreadable directory, ...)."""


class CompatibilityError(SaeInverseError, ValueError):
    """The SAE does not fit the model: its hook is missing there or its width differs."""


class ArtifactError(SaeInverseError):
    """A run artifact is missing or unreadable."""


class DataError(SaeInverseError, ValueError):
    """A prompt source is empty, lacks the text column, or yields prompts too short to use."""


class RunDirError(SaeInverseError):
    """A run directory that cannot be used: a file, not writable, or in use by another run."""


def one_line(message: object, limit: int = 400) -> str:
    """``message`` on one line: whitespace runs (newlines, tabs) become one space, cut at
    ``limit`` characters (torch's state-dict errors list every mismatched key on its own line)."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
