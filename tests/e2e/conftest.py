"""The real service stack for end-to-end tests: `infra/stack.py up` (Prefect server with its UI,
MLflow server, cpu and gpu process workers) on free loopback ports in a temp home, `deploy` of
deployments/prefect.yaml, and `down` at the end, which must leave none of its processes running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT, free_port


def runs_of(client: Any, deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def stack_command(command: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra/stack.py"), command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"stack.py {command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The running stack with the deployments registered: its URLs, home folder and environment."""
    home = tmp_path_factory.mktemp("stack-home")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "MLFLOW_TRACKING")) and key != "HF_HUB_OFFLINE"
    }
    env.update(
        TUNELOOP_HOME=str(home),
        TUNELOOP_PREFECT_PORT=str(free_port()),
        TUNELOOP_MLFLOW_PORT=str(free_port()),
        HF_HUB_OFFLINE="1",
        PREFECT_HOME=str(home / "prefect-client"),
    )
    stack_command("up", env)
    record = json.loads((home / "stack/stack.json").read_text())
    try:
        deployed = stack_command("deploy", env)
        yield {**record, "home": home, "env": env, "deploy_output": deployed.stdout}
    finally:
        stack_command("down", env)
        left = [process for process in record["processes"] if psutil.pid_exists(process["pid"])]
        assert not left, f"make down left processes running: {left}"
        assert not (home / "stack/stack.json").exists()
