"""A real `mlflow server` stopped mid-training and started again: the training goes on, the live
run keeps every metric (buffered while the server is down, sent when it is back), and the flow ends
with one FINISHED run, not a second one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from flows.train import train
from tasks.config.pipeline import PipelineConfig
from tests.helpers import free_port
from tests.helpers.stack import wait_for

pytestmark = pytest.mark.e2e
MLFLOW = Path(sys.executable).with_name("mlflow")


@contextlib.contextmanager
def mlflow_server(folder: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`mlflow server` on a SQLite store in `folder`, ready when its /health answers; killed at the end."""
    command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    with open(folder / "server.log", "ab") as log:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as infra/stack.py starts it
        server = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    try:

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            return False

        wait_for(healthy, 120, "the MLflow server")
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def test_a_server_outage_mid_training_loses_no_metric_and_makes_no_second_run(
    tiny_config: Callable[..., PipelineConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = tiny_config(
        "train.epochs=10",
        "train.batch_size=8",
        "train.early_stopping_patience=0",
        "tracking.experiment=outage",
        "tracking.loss_every_steps=20",
        "promotion.register_model=false",
    )
    outage: dict[str, float] = {}
    stack = contextlib.ExitStack()
    stack.enter_context(mlflow_server(tmp_path, port))

    def break_and_mend() -> None:
        """Kill the server once the first epoch is in, start it again 10 s later."""
        client = MlflowClient(uri)

        def first_epoch_logged() -> bool:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'training'")
            return bool(runs and client.get_metric_history(runs[0].info.run_id, "val/f1_macro"))

        wait_for(first_epoch_logged, 300, "the first epoch in the live run")
        stack.close()
        outage["down"] = time.time()
        time.sleep(10)
        outage["up"] = time.time()
        stack.enter_context(mlflow_server(tmp_path, port))

    watcher = threading.Thread(target=break_and_mend, daemon=True)
    watcher.start()
    try:
        state = train(config=config, return_state=True)
        watcher.join(300)
    finally:
        stack.close()
        stack.enter_context(mlflow_server(tmp_path, port))  # read what the server stored
    with stack:
        assert state.is_completed(), state.message
        result = state.result()
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("outage")
        [run] = client.search_runs([experiment.experiment_id], "tags.kind = 'training'")
        assert run.info.run_id == result.tracking.run_id and run.info.status == "FINISHED"
        epochs = [record.epoch for record in result.model.history]
        history = client.get_metric_history(run.info.run_id, "val/f1_macro")
        assert sorted(m.step for m in history) == epochs, "every epoch once"
        per_epoch = result.model.plan.steps_per_epoch
        steps = range(1, len(epochs) * per_epoch + 1)
        expected = sorted(step for step in steps if step % 20 == 0 or step % per_epoch == 0)
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in losses) == expected, "every loss point once"
        # Metrics measured while the server was down were kept (with their time) and sent later.
        during = [m for m in [*history, *losses] if outage["down"] * 1000 <= m.timestamp <= outage["up"] * 1000]
        assert during, (outage, history)
