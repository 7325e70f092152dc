"""The local stack that `make up` starts (infra/stack.py): where it records itself, whether it still
runs, and pointing this process at it, so CLI runs and UI runs share one Prefect API and one MLflow
registry. Imports nothing heavy: the command line calls it before Prefect or MLflow is imported."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.core.home import tuneloop_home

SERVICES = ("prefect-server", "mlflow-server")


def record_path() -> Path:
    """`<TUNELOOP_HOME>/stack/stack.json`: the running stack's URLs and process ids."""
    return tuneloop_home() / "stack" / "stack.json"


def process_alive(record: dict[str, Any]) -> bool:
    """The recorded process still runs (and is the same process, not a reused pid): it started when
    recorded or, after the clock was stepped (NTP, a resumed or cloned VM: psutil derives start times
    from the wall clock), it runs the recorded command line, whose ports and names are the stack's."""
    import psutil

    try:
        process = psutil.Process(record["pid"])
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if abs(process.create_time() - record["started"]) < 1:
            return True
        arguments = record["command"][1:]  # the program itself may run through its interpreter
        return bool(arguments) and process.cmdline()[-len(arguments) :] == arguments
    except psutil.Error:
        return False


def running_stack() -> dict[str, Any] | None:
    """The stack's record when its Prefect and MLflow servers both still run; else None."""
    path = record_path()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    servers = {process.get("name"): process for process in record.get("processes", [])}
    if all(name in servers and process_alive(servers[name]) for name in SERVICES):
        return record
    return None


def use_running_stack() -> str | None:
    """Point this process at the running local stack (PREFECT_API_URL, MLFLOW_TRACKING_URI) unless
    either is set already (the user's choice wins); the line to log, or None when nothing changed."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    record = running_stack()
    if record is None:
        return None
    os.environ["PREFECT_API_URL"] = record["prefect_api_url"]
    os.environ["MLFLOW_TRACKING_URI"] = record["mlflow_url"]
    return (
        f"Using the running local stack (make up): Prefect {record['prefect_ui_url']}, MLflow {record['mlflow_url']} "
        f"(from {record_path()}; set PREFECT_API_URL or MLFLOW_TRACKING_URI to use another)."
    )
