"""Errors a user can act on.

Every failure that bad input can cause is one of these: the message names the problem and
the fix, and the command line prints it as one line with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import re

from tasks.core.secrets import mask_credentials

# urllib3's report of a request it gave up on, and the reason inside the error it names.
RETRIES_EXCEEDED = re.compile(r"Max retries exceeded with url: \S+ \(Caused by (\w+)\((.*)", re.S)
REASONS = (re.compile(r"\[Errno -?\d+\] [^'\")]+"), re.compile(r"'([^']{3,})'"))


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (or its type), short enough for a one-line report, with
    any URL's password masked (library errors quote the URLs they failed on). A request urllib3 gave
    up on is its reason alone ("[Errno 111] Connection refused (NewConnectionError)"), not the
    retry report around it, which the limit would cut off before the reason."""
    text = mask_credentials(str(error).strip())
    if retries := RETRIES_EXCEEDED.search(text):
        cause, rest = retries.groups()
        found = next((match for pattern in REASONS if (match := pattern.search(rest))), None)
        reason = (found.group(found.lastindex or 0) if found else "").strip()
        return f"{reason} ({cause})"[:limit] if reason else cause
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


class TrackingTimeout(TrackingError):
    """The tracking server accepts connections but answers nothing: not worth a retry."""


class SweepStorageError(TuneloopError):
    """The sweep's Optuna storage (its record of trials, rounds and budget) cannot be used."""


class DiskSpaceError(TuneloopError):
    """The disk has too little free space for what the run is about to write."""


class QualityGateError(TuneloopError):
    """The trained model is below the configured quality bar (EvalConfig.min_f1)."""

    exit_code = 4


class ModelSelectionError(TuneloopError):
    """No candidate base model passed screening."""


class RegistryError(TuneloopError):
    """A registered model, version or alias is missing, or the registry refuses a change."""
