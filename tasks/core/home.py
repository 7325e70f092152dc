"""Where tuneloop writes: one home folder (`./.tuneloop`, or `TUNELOOP_HOME`). Imports nothing heavy,
so the command line can set the environment from it before Prefect is imported."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

HOME_VARIABLE = "TUNELOOP_HOME"
# Prefect's persisted task results (the cache of load, validate and split), under the home folder.
RESULTS_FOLDER = "prefect-results"
CHECKED: set[Path] = set()


def tuneloop_home() -> Path:
    """The home folder, absolute; created on first use, never at import. One that cannot be a
    writable folder (a file, read-only, no permission) is a ConfigError naming the fix."""
    from tasks.core.errors import ConfigError

    home = Path(os.environ.get(HOME_VARIABLE) or ".tuneloop").expanduser().resolve()
    if home in CHECKED and home.is_dir():  # asked often: the full check once per folder and process
        return home
    fix = f"set {HOME_VARIABLE} to a folder you can write (unset: ./.tuneloop)"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"The tuneloop home {home} is a file, not a folder: {fix}.") from None
    except OSError as error:
        raise ConfigError(f"The tuneloop home {home} cannot be created ({error.strerror}): {fix}.") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise ConfigError(f"The tuneloop home {home} is not writable: {fix}.")
    CHECKED.add(home)
    return home


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """These environment variables set for a block, each put back (or removed) after it: for libraries
    that read a setting from the environment on each call."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            set_variable(name, value)


def set_variable(name: str, value: str | None) -> None:
    """Set the environment variable `name` to `value`, or remove it (None)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def configure_environment() -> None:
    """Offline-friendly defaults, set before Prefect or MLflow are imported (Prefect reads its settings
    once, at import): no telemetry, and Prefect's task results kept under the tuneloop home folder."""
    for name, value in {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tuneloop_home() / RESULTS_FOLDER))
