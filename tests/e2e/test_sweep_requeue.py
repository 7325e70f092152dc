"""A sweep round run from a real deployment queues exactly one next round (idempotently) and emits
`tuneloop.sweep.below-threshold`, all seen through the Prefect API of a server started here."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.config.load import load_config
from tasks.config.pipeline import SweepPipelineConfig
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


def test_round_below_target_queues_one_next_round(stack: dict, tiny_bert: Path, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sweep import sweep
    from tasks.sweep.requeue import request_round

    prefect_server = stack["prefect_api_url"]
    home = tmp_path / "home"
    config = load_config(
        ROOT / "data/sample/config.yaml",
        [
            f"data.path={ROOT / 'data/sample/support_tickets.csv'}",
            f"model.candidates=[{tiny_bert}]",
            "train.batch_size=64",
            "train.max_length=32",
            "sweep.trials_per_round=1",
            "sweep.max_rounds=3",
            "sweep.target_f1=1.0",
            "train.epochs=1",
            "sweep.pruner=none",
            "sweep.cross_validation=never",
            "tracking.experiment=e2e",
        ],
        SweepPipelineConfig,
    )
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        deployment_id = sweep.to_deployment(name="e2e-sweep").apply()
        first = run_deployment("sweep/e2e-sweep", parameters={"config": config.model_dump(mode="json")}, timeout=0)
        env = {**stack["env"], "PREFECT_API_URL": prefect_server, "TUNELOOP_HOME": str(home)}
        done = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), "flow-run", "execute", str(first.id)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        with get_client(sync_client=True) as client:
            finished = client.read_flow_run(first.id)
            assert finished.state.is_completed()
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            queued = [run for run in runs if run.id != first.id]
            assert len(queued) == 1
            sweep_id = queued[0].parameters["sweep_id"]
            assert queued[0].parameters["round_number"] == 2 and sweep_id.startswith("sweep-")
            assert queued[0].parameters["config"]["sweep"]["target_f1"] == 1.0
            assert queued[0].idempotency_key == f"{sweep_id}:2"
            assert queued[0].state.is_scheduled()

            again = request_round("sweep/e2e-sweep", config, sweep_id, 2)
            assert again == str(queued[0].id)
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            assert len(runs) == 2, "a duplicate re-queue creates nothing new"

            deadline, events = time.monotonic() + 30, []
            while time.monotonic() < deadline and not events:
                page = client.read_events(
                    filter=EventFilter(
                        event=EventNameFilter(name=["tuneloop.sweep.below-threshold"]),
                        resource=EventResourceFilter(id=[f"tuneloop.sweep.{sweep_id}"]),
                    ),
                    limit=50,
                )
                events = page.events
                time.sleep(1)
        assert len(events) == 1
        assert events[0].payload["sweep_id"] == sweep_id and events[0].payload["round"] == 1
        assert events[0].payload["next_round"] == 2 and events[0].payload["target"] == 1.0
        assert events[0].resource["tuneloop.sweep.requeue"] == "run_deployment"
        assert events[0].resource["tuneloop.sweep.deployment"] == "sweep/e2e-sweep"
