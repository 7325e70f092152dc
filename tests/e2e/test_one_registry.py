"""One registry by default: with the local stack up, a bare `tuneloop run` finds it through the home's
stack file and tracks and registers in the stack's MLflow server (flow run on its Prefect server), and
MLflow's run list shows the run under a readable name (a screenshot in headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def cli_run(stack: dict[str, Any], tiny_bert: Path) -> dict[str, Any]:
    """`tuneloop run` as a user types it in the stack's home folder, with nothing pointing at the stack."""
    command = [
        str(Path(sys.executable).with_name("tuneloop")),
        *("run", "--config", str(ROOT / "data/sample/config.yaml"), "--json"),
        *("--set", f"model.candidates=[{tiny_bert}]", "--set", "train.epochs=1", "--set", "train.max_length=32"),
        *("--set", "train.batch_size=64", "--set", "tracking.experiment=e2e-cli"),
        *("--set", "promotion.model_name=e2e-cli-model"),
    ]
    environment = {k: v for k, v in stack["env"].items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"stderr": done.stderr, "result": json.loads(done.stdout.strip().splitlines()[-1])}


def test_a_cli_run_against_a_running_stack_lands_in_the_stacks_registry(
    stack: dict[str, Any], cli_run: dict[str, Any]
) -> None:
    from mlflow.tracking import MlflowClient
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert "Using the running local stack (make up)" in cli_run["stderr"]
    assert stack["mlflow_url"] in cli_run["stderr"]
    result = cli_run["result"]
    registry = MlflowClient(tracking_uri=stack["mlflow_url"])
    run = registry.get_run(result["run_id"])  # in the stack's server, not the home's mlflow.db
    versions = registry.search_model_versions("name = 'e2e-cli-model'")
    assert [version.version for version in versions] == [result["promotion"]["version"]["version"]]
    assert versions[0].tags["model_family"] in ("finetune", "baseline")
    assert versions[0].tags["mlflow_run"].startswith(stack["mlflow_url"])
    assert result["promotion"]["champion_version"] == "1" and result["promotion"]["reason"]
    with temporary_settings({PREFECT_API_URL: stack["prefect_api_url"]}), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run.data.tags["prefect.flow_run_id"])  # on the stack's Prefect server
    assert flow_run.state.is_completed()


@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_mlflows_run_list_shows_readable_run_names(
    stack: dict[str, Any], cli_run: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    name = MlflowClient(tracking_uri=stack["mlflow_url"]).get_run(cli_run["result"]["run_id"]).info.run_name
    assert re.fullmatch(r"train-support_tickets-tiny[-\w.]*-\d{4}-\d{4}", name), name
    experiment = MlflowClient(tracking_uri=stack["mlflow_url"]).get_experiment_by_name("e2e-cli").experiment_id
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{stack['mlflow_url']}/#/experiments/{experiment}/runs?workflowType=machine_learning")
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
            page.screenshot(path=str(tmp_path / "run-list.png"))
        finally:
            browser.close()
    assert (tmp_path / "run-list.png").stat().st_size > 10_000
