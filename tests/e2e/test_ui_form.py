"""The UIs in headless Chromium: the Prefect UI's custom-run form of the train deployment (our
typed, described, grouped fields are there, and submitting the form starts a run with its values),
and a sweep's report in MLflow's artifact viewer (its pictures drawn inline)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT
from tests.helpers.stack import runs_of, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def creates_a_run(response: Any) -> bool:
    """Whether a browser response answers the form's Submit."""
    return "/create_flow_run" in response.url


@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_custom_run_form_shows_our_fields_and_submits_a_run(stack: dict[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack["prefect_api_url"]}), get_client(sync_client=True) as client:
        client.update_work_pool("gpu", WorkPoolUpdate(is_paused=True))  # the submitted run is looked at, not trained
        nightly = client.read_deployment_by_name("train/nightly")
        before = {run.id for run in runs_of(client, nightly.id)}

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{stack['prefect_ui_url']}/deployments/deployment/{nightly.id}/run")
                # Grouped sections with their descriptions, typed fields with theirs, dropdowns for choices.
                expect(page.get_by_text("Every setting of the run, grouped by step")).to_be_visible(timeout=60_000)
                # The first screen shows what a user decides first: the data and its columns.
                for text in ("Where the labelled text is.", "Column holding the class label."):
                    box = page.get_by_text(text, exact=False).first.bounding_box()
                    assert box is not None and box["y"] + box["height"] < 1000, (text, box)
                validation = page.get_by_text("The data-quality gate.", exact=True).bounding_box()
                assert validation is not None and validation["y"] > 1000, "the finer sections come after"
                for text in (
                    "The data-quality gate.",
                    "Peak learning rate; unset: 1e-4 for full, 1e-3 for LoRA.",
                    "Most epochs to train; early stopping usually ends sooner. Unset: from the data size, "
                    "enough for about 5000 optimizer steps, at least 3 and at most 30.",
                    "Texts per batch when predicting.",
                ):
                    expect(page.get_by_text(text, exact=True)).to_be_visible()
                # A training run's form has no sweep section (the sweep deployments' form has it).
                expect(page.get_by_text("Stop when a trial's validation score reaches this.")).to_have_count(0)
                # Literal choices are dropdowns (train.method shows its default), not free text.
                assert page.locator(".p-select").count() >= 5
                expect(page.locator("button.p-select-button__control[modelvalue=full]").first).to_be_visible()
                statuses = []
                # On SQLite a busy server answers 503 ("database is locked") and the browser, unlike
                # Prefect's client, does not retry: press Submit again, as a person would.
                while len(statuses) < 4 and 201 not in statuses:
                    # a loaded CI machine can take its time to answer
                    with page.expect_response(creates_a_run, timeout=120_000) as created:
                        page.get_by_role("button", name="Submit").click()
                    statuses.append(created.value.status)
                    page.wait_for_timeout(2000 if statuses[-1] == 503 else 0)
                assert statuses[-1] == 201 and set(statuses) <= {201, 503}, statuses
            finally:
                browser.close()

        new = wait_for(
            lambda: [run for run in runs_of(client, nightly.id) if run.id not in before and not run.auto_scheduled],
            30,
            "the run submitted from the form",
        )
    [run] = new
    assert run.parameters["config"]["tracking"]["experiment"] == "nightly-retrain"
    assert run.parameters["config"]["train"]["method"] == "full"
    assert run.parameters["config"]["data"]["text_columns"] is None, "unset: the sample's columns, never inherited"
    assert run.parameters["config"]["model"]["allowed_licenses"][0] == "apache-2.0", "list defaults survive the form"


@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_the_sweep_report_renders_with_its_pictures_in_mlflows_ui(
    stack: dict[str, Any], tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-round sweep tracked in the stack's MLflow server; MLflow's artifact viewer shows its
    report/report.html with every picture drawn (an image that failed to load has no natural width)."""
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect, sync_playwright
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sweep import sweep
    from tasks.config.load import load_config
    from tasks.config.pipeline import SweepPipelineConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["mlflow_url"])
    overrides = [f"model.candidates=[{tiny_bert}]", "train.batch_size=64", "train.max_length=32", "train.epochs=1"]
    overrides += [
        "sweep.trials_per_round=2",
        "sweep.max_rounds=1",
        "sweep.pruner=none",
        "tracking.experiment=e2e-report",
    ]
    config = load_config(ROOT / "data/sample/config.yaml", overrides, SweepPipelineConfig)
    with temporary_settings({PREFECT_API_URL: stack["prefect_api_url"]}):
        result = sweep(config=config)
    client = MlflowClient(stack["mlflow_url"])
    experiment = client.get_experiment_by_name("e2e-report").experiment_id
    url = f"{stack['mlflow_url']}/#/experiments/{experiment}/runs/{result.parent_run_id}/artifacts/report/report.html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url)
            report = page.frame_locator("iframe").first
            expect(report.get_by_text(f"Sweep {result.sweep_id}")).to_be_visible(timeout=60_000)
            images = report.locator("img")
            expect(images.first).to_be_visible()
            widths = images.evaluate_all("(found) => found.map((image) => image.naturalWidth)")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(widths) >= 3 and all(width > 100 for width in widths), widths
