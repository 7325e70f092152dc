"""The fault suite runs its commands against the session's Prefect test server (tests/conftest.py),
or, where a test is about the temporary server a command starts itself, in a Prefect home of its
own seeded with a migrated database (`migrated_prefect`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_server: str) -> str:
    return prefect_server


@pytest.fixture(scope="session")
def migrated_prefect(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A Prefect home whose database Prefect has migrated, made once per test run for all xdist
    workers. A command whose Prefect home starts as a copy of it starts its temporary server in
    seconds instead of migrating a fresh database (about 15 s of CPU, which every worker's tests
    wait for). A first start on a fresh home keeps its own test (test_started_at_once.py)."""
    from filelock import FileLock

    run = tmp_path_factory.getbasetemp()
    shared = run if worker_id == "master" else run.parent  # this run's folder, the same for every worker
    template = shared / "prefect-migrated"
    with FileLock(str(shared / "prefect-migrated.lock")):
        if not (template / "prefect.db").is_file():
            building = shared / "prefect-migrating"
            shutil.rmtree(building, ignore_errors=True)
            env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
            prefect = str(Path(sys.executable).with_name("prefect"))
            upgrade = [prefect, "server", "database", "upgrade", "--yes"]
            subprocess.run(upgrade, env={**env, "PREFECT_HOME": str(building)}, check=True, capture_output=True)
            building.rename(template)
    return template
