"""The CLI finds the running local stack through the home's stack file (so CLI and UI runs share one
registry), and leaves the environment alone when the stack is gone or the user chose endpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from tasks.core.stack import use_running_stack


def record_stack(home: Path, pid: int) -> None:
    """A stack.json as `make up` writes it, its two servers being process `pid`."""
    started = psutil.Process(pid).create_time() if psutil.pid_exists(pid) else 0.0
    process = {"pid": pid, "started": started, "command": ["x"], "log": "x"}
    record = {
        "prefect_api_url": "http://127.0.0.1:4299/api",
        "prefect_ui_url": "http://127.0.0.1:4299",
        "mlflow_url": "http://127.0.0.1:5099",
        "processes": [{**process, "name": "prefect-server"}, {**process, "name": "mlflow-server"}],
    }
    (home / "stack").mkdir(parents=True, exist_ok=True)
    (home / "stack" / "stack.json").write_text(json.dumps(record))


@pytest.fixture
def plain_environment(monkeypatch: pytest.MonkeyPatch, tuneloop_home: Path) -> Path:
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):  # set, then removed: put back as it was after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tuneloop_home


def test_a_running_stack_is_used_and_said_so(plain_environment: Path) -> None:
    record_stack(plain_environment, os.getpid())  # this process stands in for both servers
    said = use_running_stack()
    assert said is not None and "Using the running local stack (make up)" in said and "5099" in said
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4299/api"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5099"


def test_a_stopped_stack_or_chosen_endpoints_change_nothing(
    plain_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert use_running_stack() is None, "no stack file"
    record_stack(plain_environment, 2**22 + 12345)  # no such process
    assert use_running_stack() is None and "MLFLOW_TRACKING_URI" not in os.environ
    record_stack(plain_environment, os.getpid())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mine.db")
    assert use_running_stack() is None and "PREFECT_API_URL" not in os.environ, "the user's choice wins"
