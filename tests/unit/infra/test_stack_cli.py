"""`infra/stack.py` (make up/down/status/deploy) answers bad situations with one line and an exit
code, and starts nothing when it cannot start everything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import ROOT, free_port
from tests.helpers.stack import wait_for


def stack(command: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_URL")}
    return subprocess.run(
        [sys.executable, str(ROOT / "infra/stack.py"), command],
        env={**clean, "TUNELOOP_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_refuses_a_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = stack("up", tmp_path, TUNELOOP_PREFECT_PORT=str(port))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"Port {port} is taken" in done.stderr and "TUNELOOP_PREFECT_PORT" in done.stderr
    assert not (tmp_path / "stack/stack.json").exists()


def test_malformed_settings_are_named(tmp_path: Path) -> None:
    port = stack("up", tmp_path, TUNELOOP_MLFLOW_PORT="fivethousand")
    ports = {"TUNELOOP_PREFECT_PORT": str(free_port()), "TUNELOOP_MLFLOW_PORT": str(free_port())}
    database = stack("up", tmp_path, TUNELOOP_DB_URL="mysql://db:3306", **ports)
    nobody = stack("up", tmp_path, TUNELOOP_DB_URL=f"postgresql://tuneloop@127.0.0.1:{free_port()}", **ports)
    assert port.returncode == 2 and "TUNELOOP_MLFLOW_PORT='fivethousand' is not a port number" in port.stderr
    assert database.returncode == 2 and "is not a Postgres URL" in database.stderr
    assert nobody.returncode == 2 and "Cannot reach Postgres at TUNELOOP_DB_URL" in nobody.stderr
    errors = port.stderr + database.stderr + nobody.stderr
    assert "Traceback" not in errors and not (tmp_path / "stack/stack.json").exists()


def test_status_down_and_deploy_without_a_stack(tmp_path: Path) -> None:
    status, down = stack("status", tmp_path), stack("down", tmp_path)
    deploy = stack("deploy", tmp_path, PREFECT_API_URL="http://127.0.0.1:9/api")
    assert status.returncode == 1 and "not running" in status.stdout
    assert down.returncode == 0 and "Nothing to stop" in down.stdout
    assert deploy.returncode == 2 and "does not answer" in deploy.stderr and "make up" in deploy.stderr


def stack_script() -> Any:
    """infra/stack.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stack_script", ROOT / "infra/stack.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_stacks_workers_poll_every_two_seconds_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's 10 s default would make a UI run wait up to 10 s for a worker, and start a round's
    trial flow runs up to a poll apart."""
    script = stack_script()
    monkeypatch.delenv("PREFECT_WORKER_QUERY_SECONDS", raising=False)
    assert script.service_env("http://p", "http://m")["PREFECT_WORKER_QUERY_SECONDS"] == "2"
    monkeypatch.setenv("PREFECT_WORKER_QUERY_SECONDS", "15")
    assert script.service_env("http://p", "http://m")["PREFECT_WORKER_QUERY_SECONDS"] == "15"


def test_a_stack_process_is_still_known_after_the_clock_was_stepped() -> None:
    """`make down` must find its processes after an NTP step or a resumed VM moved the wall clock
    (psutil's start times move with it); a reused pid running something else is not ours."""
    script = stack_script()
    command = [sys.executable, "-c", "import time; time.sleep(60)", "tuneloop-test"]
    process = subprocess.Popen(command)
    try:
        # Popen returns once exec began; the kernel shows the new command line a moment later.
        wait_for(lambda: psutil.Process(process.pid).cmdline() or None, 10, "the command line")
        record = {"pid": process.pid, "started": psutil.Process(process.pid).create_time(), "command": command}
        assert script.alive(record)
        stepped = {**record, "started": record["started"] - 3600}  # the clock moved an hour since
        assert script.alive(stepped), "the same command line is the same process"
        assert not script.alive({**stepped, "command": [sys.executable, "-c", "something else"]})
    finally:
        process.kill()
        process.wait()
    assert not script.alive(record)
