"""Run folders (every flow run writes under `<home>/runs/<start>-<label>-<flow run name>`) and the
cache policy of the deterministic steps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from tasks.core.home import tuneloop_home

# Part of every cache key: a cached result is a pickle of our classes under their module paths, so a
# change of layout (modules moved) must not read results written by an older one. Raise it then.
CODE_LAYOUT = "layout-2"


def code_layout(context: Any, parameters: dict[str, Any]) -> str:
    """The code layout's version, as a cache-key part."""
    return CODE_LAYOUT


# Deterministic steps (load, validate, split) cache on their inputs, their source and the layout.
STEP_CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=code_layout)


def run_folder_name(label: str, started: datetime | None, run_name: str | None) -> str:
    """`<start time>-<label>-<flow run name>`: sortable, and the same for every retry of one run."""
    stamp = (started or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stamp}-{label}-{run_name or 'local'}")


@task(name="create_run_folder")
def create_run_folder(label: str) -> Path:
    """The folder of the current flow run under the home folder's `runs/` (created)."""
    from prefect.runtime import flow_run

    folder = tuneloop_home() / "runs" / run_folder_name(label, flow_run.scheduled_start_time, flow_run.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
