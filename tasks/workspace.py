"""Where tuneloop writes: one home folder (`./.tuneloop`, or `TUNELOOP_HOME`) holding every run."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from prefect import task

HOME_VARIABLE = "TUNELOOP_HOME"


def tuneloop_home() -> Path:
    """The home folder, absolute; created on first use, never at import."""
    home = Path(os.environ.get(HOME_VARIABLE) or ".tuneloop").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def run_folder_name(label: str, started: datetime | None, run_name: str | None) -> str:
    """`<start time>-<label>-<flow run name>`: sortable, and the same for every retry of one run."""
    stamp = (started or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stamp}-{label}-{run_name or 'local'}")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@task(name="create_run_folder")
def create_run_folder(label: str) -> Path:
    """The folder of the current flow run under the home folder's `runs/` (created)."""
    from prefect.runtime import flow_run

    folder = tuneloop_home() / "runs" / run_folder_name(label, flow_run.scheduled_start_time, flow_run.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
