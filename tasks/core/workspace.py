"""Run folders (every flow run writes under `<home>/runs/<start>-<label>-<flow run name>`), the
record each training run keeps in its folder so that a crashed run can be continued, and the cache
policy of the deterministic steps."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy
from pydantic import BaseModel

from tasks.core.home import tuneloop_home

# Part of every cache key: a cached result is a pickle of our classes under their module paths, so a
# change of layout (modules moved) must not read results written by an older one. Raise it then.
CODE_LAYOUT = "layout-2"
RUN_RECORD = "run.json"


def code_layout(context: Any, parameters: dict[str, Any]) -> str:
    """The code layout's version, as a cache-key part."""
    return CODE_LAYOUT


# Deterministic steps (load, validate, split) cache on their inputs, their source and the layout.
STEP_CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=code_layout)


def run_folder_name(label: str, started: datetime | None, run_name: str | None) -> str:
    """`<start time>-<label>-<flow run name>`: sortable, and the same for every retry of one run."""
    stamp = (started or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stamp}-{label}-{run_name or 'local'}")


def this_flow_runs_folder(label: str) -> Path:
    """The folder named for the current flow run (the same for each retry of it)."""
    from prefect.runtime import flow_run

    return tuneloop_home() / "runs" / run_folder_name(label, flow_run.scheduled_start_time, flow_run.name)


@task(name="create_run_folder")
def create_run_folder(label: str) -> Path:
    """The folder of the current flow run under the home folder's `runs/` (created)."""
    folder = this_flow_runs_folder(label)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class RunRecord(BaseModel):
    """What a training run's folder says of its run: what it trains (a fingerprint of its settings
    and data), which process runs it, its MLflow run, and how it ended. `running` with its process
    gone (kill -9, out of memory, power loss) or `interrupted` (crashed, cancelled, Ctrl-C, SIGTERM)
    means unfinished: the same settings and data continue it from its last checkpoint."""

    label: str
    fingerprint: str
    status: Literal["running", "interrupted", "failed", "finished"]
    flow_run_id: str
    host: str
    pid: int
    process_started: float
    mlflow_run_id: str | None = None


def read_record(folder: Path) -> RunRecord | None:
    """The folder's run record, or None (none, or unreadable: a folder of an older version)."""
    try:
        return RunRecord.model_validate_json((folder / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_record(folder: Path, record: RunRecord) -> None:
    """Replace the folder's record atomically (a reader never sees half a file)."""
    partial = folder / f".{RUN_RECORD}.{os.getpid()}"
    partial.write_text(record.model_dump_json(indent=2))
    os.replace(partial, folder / RUN_RECORD)


def process_alive(record: RunRecord) -> bool:
    """Whether the process that wrote `record` may still run it. One on another host cannot be
    checked, so it counts as alive (its folder is never taken over from here)."""
    import psutil

    if record.host != socket.gethostname():
        return True
    try:
        process = psutil.Process(record.pid)
        return abs(process.create_time() - record.process_started) < 1 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def unfinished(record: RunRecord | None, label: str, fingerprint: str) -> bool:
    """Whether a folder with `record` holds an unfinished run of these settings and data that no
    live process runs."""
    if record is None or record.label != label or record.fingerprint != fingerprint:
        return False
    return record.status == "interrupted" or (record.status == "running" and not process_alive(record))


def find_unfinished(runs: Path, label: str, fingerprint: str) -> Path | None:
    """The newest unfinished run folder of these settings and data, if any."""
    for folder in sorted(runs.glob(f"*-{label}-*"), reverse=True):
        if unfinished(read_record(folder), label, fingerprint):
            return folder
    return None


def owned_record(label: str, fingerprint: str, kept: RunRecord | None) -> RunRecord:
    """A `running` record owned by this process and flow run (keeping the MLflow run of `kept`)."""
    import psutil
    from prefect.runtime import flow_run

    return RunRecord(
        label=label,
        fingerprint=fingerprint,
        status="running",
        flow_run_id=str(flow_run.id or ""),
        host=socket.gethostname(),
        pid=os.getpid(),
        process_started=psutil.Process().create_time(),
        mlflow_run_id=kept.mlflow_run_id if kept else None,
    )


@task(name="open_run_folder")
def open_run_folder(label: str, settings: BaseModel, sources: list[str], fresh: bool = False) -> Path:
    """The run's folder: this flow run's own on a retry; else, unless `fresh`, the newest unfinished
    run of the same settings and data (`sources`: their stamps), continued from its last checkpoint
    with its MLflow run; else a new one. The choice and the claim happen under a lock, so two runs
    never continue the same folder."""
    from filelock import FileLock

    fingerprint = fingerprint_of(settings.model_dump(mode="json"), sources)
    own = this_flow_runs_folder(label)
    runs = own.parent
    runs.mkdir(parents=True, exist_ok=True)
    with FileLock(str(runs / ".claim.lock"), timeout=60):
        found = None if fresh or own.is_dir() else find_unfinished(runs, label, fingerprint)
        folder = found or own
        folder.mkdir(exist_ok=True)
        previous = read_record(folder)
        write_record(folder, owned_record(label, fingerprint, previous))
    if found is not None and previous is not None:
        get_run_logger().info(
            "Continuing the unfinished run %s (its process %d ended before it finished) from its last checkpoint, "
            "with its MLflow run; --fresh (fresh=true) starts a new run instead.",
            found.name,
            previous.pid,
        )
    return folder


def update_record(folder: Path, **changes: Any) -> None:
    """Change fields of the folder's run record (nothing when it has none)."""
    record = read_record(folder)
    if record is not None:
        write_record(folder, record.model_copy(update=changes))


def record_outcome(flow_run_id: str, status: str) -> None:
    """Set the status of the run folder that flow run `flow_run_id` owns (for flow state hooks)."""
    runs = tuneloop_home() / "runs"
    for path in runs.glob(f"*/{RUN_RECORD}") if runs.is_dir() else []:
        record = read_record(path.parent)
        if record is not None and record.flow_run_id == flow_run_id and record.status == "running":
            update_record(path.parent, status=status)


def run_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (failed): the run decided its outcome; a rerun starts a new run. A run that failed
    because the disk filled up decided nothing: it stays continuable, like an interrupted one."""
    from tasks.core.disk import disk_full, says_disk_full

    try:
        error = state.result(raise_on_failure=False)
    except Exception as unreadable:  # a result that cannot be read back says nothing about the disk
        error = unreadable
    full = disk_full(error if isinstance(error, BaseException) else None) or says_disk_full(state.message or "")
    with contextlib.suppress(OSError):  # a full disk takes the record too: it says running, by a process now gone
        record_outcome(str(flow_run.id), "interrupted" if full else "failed")


def run_interrupted(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (crashed, cancelled): the run ended before its outcome; a rerun continues it."""
    record_outcome(str(flow_run.id), "interrupted")


@task(name="finish_run_folder")
def finish_run_folder(folder: Path, keep_checkpoints: bool) -> None:
    """The run succeeded: its final model is all it needs (the first fit's and the refit's
    checkpoints removed unless kept), and its record says finished, so no later run continues it."""
    import shutil

    if not keep_checkpoints:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        shutil.rmtree(folder / "refit" / "checkpoints", ignore_errors=True)
    update_record(folder, status="finished")


def fingerprint_of(settings: dict[str, Any], sources: list[str]) -> str:
    """A fingerprint of a run's inputs: its settings and its data sources' stamps."""
    import hashlib

    text = json.dumps({"settings": settings, "sources": sources}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
