"""Errors a user can act on.

Every failure that bad input can cause is one of these: the message names the problem and
the fix, and the command line prints it as one line with a non-zero exit code and no traceback.
"""

from __future__ import annotations

from tasks.core.secrets import mask_credentials


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (or its type), short enough for a one-line report, with
    any URL's password masked (library errors quote the URLs they failed on)."""
    text = mask_credentials(str(error).strip())
    return text.splitlines()[0][:limit] if text else type(error).__name__


class TuneloopError(Exception):
    """Base of the errors that are the user's to fix, not bugs. The message never shows a URL's password."""

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        super().__init__(mask_credentials(str(message)))


class ConfigError(TuneloopError):
    """A configuration key or value is wrong."""


class DataLoadError(TuneloopError):
    """The data file or dataset cannot be read as a labelled text table."""


class DataValidationError(TuneloopError):
    """The data does not meet the dataset contract (a blocking check failed, or too many bad rows)."""

    exit_code = 3


class SplitError(TuneloopError):
    """The data cannot be split as configured (classes too small, overlap between splits)."""

    exit_code = 3


class ModelNotFoundError(TuneloopError):
    """The base model is not in a local folder, an installed package, the Hugging Face cache or the Hub."""


class TrackingError(TuneloopError):
    """The MLflow tracking server cannot be reached or refuses the run."""


class QualityGateError(TuneloopError):
    """The trained model is below the configured quality bar (EvalConfig.min_f1)."""

    exit_code = 4


class ModelSelectionError(TuneloopError):
    """No candidate base model passed screening."""


class RegistryError(TuneloopError):
    """A registered model, version or alias is missing, or the registry refuses a change."""
