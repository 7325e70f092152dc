"""The local stack in end-to-end tests: start and stop it (`infra/stack.py`), its Prefect client,
waiting for what its workers do, and a train deployment run checked in its MLflow server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import ROOT, free_port


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


@contextlib.contextmanager
def prefect_client(stack: dict[str, Any]) -> Iterator[Any]:
    """A synchronous Prefect client of the stack's server."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack["prefect_api_url"]}), get_client(sync_client=True) as client:
        yield client


def live_epochs(tracking: Any, experiment: str, flow_run_id: Any) -> list[int]:
    """The epochs of val/f1_macro that the flow run's training run holds while it is RUNNING."""
    found = tracking.get_experiment_by_name(experiment)
    query = f"tags.`prefect.flow_run_id` = '{flow_run_id}' and attributes.status = 'RUNNING'"
    runs = tracking.search_runs([found.experiment_id], query) if found else []
    return [m.step for run in runs for m in tracking.get_metric_history(run.info.run_id, "val/f1_macro")]


def run_train_deployment(stack: dict[str, Any], client: Any, model: Path, experiment: str, epochs: int = 1) -> Any:
    """Start `train/cpu` with custom parameters through the API, wait for the cpu worker to finish
    it, and return its run in the stack's MLflow server (checked: live while it trained, metrics,
    params, artifacts)."""
    from mlflow.tracking import MlflowClient

    from tasks.config.load import load_config

    config = load_config(
        ROOT / "data/sample/config.yaml",
        [
            f"model.candidates=[{model}]",
            f"train.epochs={epochs}",
            "train.early_stopping_patience=0",
            "train.batch_size=64",
            "train.max_length=32",
            f"tracking.experiment={experiment}",
            "promotion.baseline_competes=false",  # the tiny model loses to the baseline; the fine-tune is followed
        ],
    )
    # Only what differs from the defaults, as a person would type into the form.
    parameters = {"config": config.model_dump(mode="json", exclude_defaults=True)}
    run = client.create_flow_run_from_deployment(client.read_deployment_by_name("train/cpu").id, parameters=parameters)
    tracking = MlflowClient(tracking_uri=stack["mlflow_url"])
    seen_live: list[int] = []
    deadline = time.monotonic() + 420
    while not (finished := client.read_flow_run(run.id)).state.is_final():
        assert time.monotonic() < deadline, "timed out waiting for the train run to finish"
        seen_live = seen_live or live_epochs(tracking, experiment, run.id)
        time.sleep(0.3)
    assert finished.state.is_completed(), finished.state.message
    assert seen_live and seen_live[0] == 1, "the run was RUNNING in MLflow with its first epoch before it ended"

    found = tracking.get_experiment_by_name(experiment)
    [tracked] = tracking.search_runs([found.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run.id}'")
    assert 0 <= tracked.data.metrics["test/f1_macro"] <= 1
    assert tracked.data.params["train.max_length"] == "32"
    artifacts = {item.path for item in tracking.list_artifacts(tracked.info.run_id)}
    assert "evaluation" in artifacts and tracked.info.artifact_uri.startswith("mlflow-artifacts:")
    return tracked


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


@contextlib.contextmanager
def running_stack(home: Path, **settings: str) -> Iterator[dict[str, Any]]:
    """`stack.py up` + `deploy` in `home` on free ports (plus `settings` such as TUNELOOP_DB_URL);
    `down` at the end, which must leave none of its processes running."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "MLFLOW_TRACKING", "TUNELOOP_DB_URL")) and key != "HF_HUB_OFFLINE"
    }
    env.update(
        TUNELOOP_HOME=str(home),
        TUNELOOP_PREFECT_PORT=str(free_port()),
        TUNELOOP_MLFLOW_PORT=str(free_port()),
        HF_HUB_OFFLINE="1",
        PREFECT_HOME=str(home / "prefect-client"),
        # Workers poll every second (the stack's default is 2 s, Prefect's 10 s), so the trials of a
        # round that the tests expect to overlap start together (seen at 10 s: 8 s trials 11 s apart).
        PREFECT_WORKER_QUERY_SECONDS="1",
        **settings,
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


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (initdb, pg_ctl), or None."""
    if found := shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None
