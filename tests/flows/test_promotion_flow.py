"""Champion/challenger inside a real Prefect flow run: a tiny BERT trained once is the champion
(scored for real on the test split); candidates with controlled test metrics are promoted or
not; the approval form pauses the run and is answered (approve, reject) or left to time out."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from prefect import flow

from flows.promote import champion_challenger
from flows.train import TrainResult, train
from tasks.config.pipeline import PipelineConfig
from tasks.config.promotion import PromotionConfig
from tasks.core.metrics import SplitMetrics, split_metrics
from tasks.model.predict import predictions
from tasks.registry.versions import PromotionResult, find_version, register_version, set_champion


@pytest.fixture(scope="module")
def trained(
    tiny_config: Callable[..., PipelineConfig], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, TrainResult]]:
    """One training (not registered) in its own store: its model plays champion and candidate."""
    home = tmp_path_factory.mktemp("promotion-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELOOP_HOME", str(home))
        result = train(config=tiny_config("train.epochs=1", "promotion.register_model=false"))
    assert result.promotion is None
    yield f"sqlite:///{home / 'mlflow.db'}", result


@flow(name="promotion-check")
def promotion_check(
    uri: str, rules: PromotionConfig, run_id: str, candidate: SplitMetrics, test_path: str, predicted: str, folder: str
) -> PromotionResult:
    model_id = (
        mlflow.MlflowClient(uri)
        .search_logged_models(experiment_ids=[mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id])[0]
        .model_id
    )
    return champion_challenger(
        uri,
        rules,
        run_id,
        model_id,
        candidate,
        test_path,
        predicted,
        64,
        Path(folder),
        {"dataset_sha256": "x"},
        {"run": "here"},
    )


def with_champion(uri: str, result: TrainResult) -> tuple[str, SplitMetrics]:
    """A new registered model whose v1 (the trained model) is champion, and its real test scores."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    version = register_version(uri, name, result.tracking.run_id, str(result.tracking.model_id), {})
    set_champion(uri, name, version.version, "promoted", {})
    test = pd.read_parquet(result.splits.test.path)
    truth = test["label"].astype(str).tolist()
    champion = split_metrics(truth, predictions(result.model.path, test["text"].tolist(), 64), sorted(set(truth)))
    return name, champion


def shifted(metrics: SplitMetrics, by: float, per_class: dict[str, float] | None = None) -> SplitMetrics:
    """The same scores moved by `by` (clipped to 0..1); per-class F1 overridden where given."""
    overall = {k: min(1.0, max(0.0, v + by)) for k, v in metrics.model_dump().items() if k != "per_class"}
    classes = {
        label: {**values, "f1": (per_class or {}).get(label, min(1.0, max(0.0, values["f1"] + by)))}
        for label, values in metrics.per_class.items()
    }
    return SplitMetrics(**overall, per_class=classes)


def check(uri: str, result: TrainResult, name: str, candidate: SplitMetrics, tmp_path: Path, **rules: Any) -> Any:
    config = PromotionConfig(model_name=name, **rules)
    run = promotion_check.with_options(flow_run_name=f"check-{name}")
    return run(
        uri,
        config,
        result.tracking.run_id,
        candidate,
        result.splits.test.path,
        result.evaluation.predictions_path,
        str(tmp_path / "promotion"),
        return_state=True,
    )


def aliases(uri: str, name: str) -> dict[str, str]:
    model = mlflow.MlflowClient(uri, registry_uri=uri).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_a_better_candidate_is_promoted_and_the_old_champion_kept_as_previous(trained: Any, tmp_path: Path) -> None:
    uri, result = trained
    name, champion = with_champion(uri, result)
    outcome: PromotionResult = check(uri, result, name, shifted(champion, 0.3), tmp_path).result()
    assert outcome.decision == "promoted" and outcome.champion == "2" and outcome.comparison.champion_version == "1"
    assert outcome.comparison.champion.f1_macro == pytest.approx(champion.f1_macro), "scored on the same test split"
    assert aliases(uri, name) == {"candidate": "2", "champion": "2", "previous": "1"}
    tags = find_version(uri, name, version="2").tags
    assert tags["promotion.decision"] == "promoted" and tags["dataset_sha256"] == "x"
    assert float(tags["test.f1_macro"]) == pytest.approx(min(1.0, champion.f1_macro + 0.3), abs=1e-6)
    files = {item.path for item in mlflow.MlflowClient(uri).list_artifacts(result.tracking.run_id, "promotion")}
    assert {"promotion/comparison.md", "promotion/confusion_candidate_champion.png"} <= files


def test_a_worse_candidate_or_a_class_regression_is_not_promoted(trained: Any, tmp_path: Path) -> None:
    uri, result = trained
    name, champion = with_champion(uri, result)
    same_classes = {label: values["f1"] for label, values in champion.per_class.items()}
    worse = check(uri, result, name, shifted(champion, -0.05, same_classes), tmp_path).result()
    assert worse.decision == "rejected" and "does not beat it" in worse.message
    strongest = max(champion.per_class, key=lambda label: champion.per_class[label]["f1"])
    dropped = champion.per_class[strongest]["f1"] - 0.05
    regressed = check(uri, result, name, shifted(champion, 0.2, {strongest: dropped}), tmp_path).result()
    assert regressed.decision == "rejected" and set(regressed.comparison.regressions) == {strongest}
    never = check(uri, result, name, shifted(champion, 0.3), tmp_path, mode="never").result()
    assert never.decision == "not_attempted"
    assert aliases(uri, name) == {"candidate": "4", "champion": "1"}
    assert find_version(uri, name, version="3").tags["promotion.decision"] == "rejected"


def answer_when_paused(flow_run_name: str, answer: dict[str, Any] | None, seen: dict[str, Any]) -> None:
    """Wait for the named flow run to pause; read its form; resume it with `answer` (None: leave it)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.flow_runs import resume_flow_run
    from prefect.input.run_input import keyset_from_paused_state

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name])))
            if runs and runs[0].state.is_paused():
                keyset = keyset_from_paused_state(runs[0].state)
                seen["description"] = client.read_flow_run_input(runs[0].id, keyset["description"])
                seen["schema"] = client.read_flow_run_input(runs[0].id, keyset["schema"])
                if answer is not None:
                    resume_flow_run(runs[0].id, run_input=answer)
                return
            time.sleep(0.5)


@pytest.mark.parametrize(
    ("answer", "decision", "champion"),
    [
        ({"approve": True, "comment": "better on billing", "reviewer": "ana"}, "approved", "2"),
        ({"approve": False, "comment": "wait for more data", "reviewer": "ben"}, "rejected_by_reviewer", "1"),
        (None, "timeout", "1"),
    ],
)
def test_approval_form_decides_and_is_recorded(
    trained: Any, tmp_path: Path, answer: dict[str, Any] | None, decision: str, champion: str
) -> None:
    uri, result = trained
    name, scores = with_champion(uri, result)
    seen: dict[str, Any] = {}
    reviewer = threading.Thread(target=answer_when_paused, args=(f"check-{name}", answer, seen))
    reviewer.start()
    hours = (4 if answer is None else 30) / 3600
    state = check(uri, result, name, shifted(scores, 0.3), tmp_path, mode="approval", approval_timeout_hours=hours)
    reviewer.join()
    assert state.is_completed(), "a rejection or a timeout does not fail the run"
    outcome: PromotionResult = state.result()
    assert outcome.decision == decision and aliases(uri, name)["champion"] == champion
    assert "| f1_macro |" in seen["description"] and "champion v1" in seen["description"]
    assert {"approve", "comment", "reviewer"} <= set(json.loads(seen["schema"])["properties"])
    tags = find_version(uri, name, version="2").tags
    assert tags["promotion.decision"] == decision
    if answer:
        assert tags["promotion.comment"] == answer["comment"] and tags["promotion.reviewer"] == answer["reviewer"]
