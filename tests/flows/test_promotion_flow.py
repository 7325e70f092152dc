"""Champion/challenger inside a real Prefect flow run: a tiny BERT trained once is the champion
(scored for real on the test split); candidates with controlled test metrics are promoted or
not; the approval form pauses the run and is answered (approve, reject) or left to time out."""

from __future__ import annotations

import contextvars
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
from tasks.core.metrics import split_metrics
from tasks.model.predict import predictions
from tasks.registry.versions import Candidate, PromotionResult, find_version, register_version, set_champion


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
    uri: str, rules: PromotionConfig, candidate: Candidate, test_path: str, folder: str
) -> PromotionResult:
    return champion_challenger(
        uri, rules, candidate, test_path, 64, Path(folder), {"dataset_sha256": "x"}, {"run": "here"}
    )


def with_champion(uri: str, result: TrainResult) -> tuple[str, list[str]]:
    """A new registered model whose v1 (the trained model) is champion, and its real test predictions."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    version = register_version(uri, name, result.tracking.run_id, str(result.tracking.model_id), {})
    set_champion(uri, name, version.version, "promoted", {})
    test = pd.read_parquet(result.splits.test.path)
    return name, predictions(result.model.path, test["text"].tolist(), 64)


def truth_of(result: TrainResult) -> list[str]:
    return pd.read_parquet(result.splits.test.path)["label"].astype(str).tolist()


def check(
    uri: str,
    result: TrainResult,
    name: str,
    predicted: list[str],
    tmp_path: Path,
    blocked: str | None = None,
    **rules: Any,
) -> Any:
    """champion_challenger in a flow run, the candidate being the trained model's run with these test
    predictions (its model is the champion's: the rule looks at the predictions, not the weights),
    `blocked` when given."""
    config = PromotionConfig(model_name=name, **rules)
    test = pd.read_parquet(result.splits.test.path)
    path = tmp_path / f"predicted-{uuid.uuid4().hex[:6]}.csv"
    test.assign(predicted=predicted).to_csv(path, index=False)
    truth = truth_of(result)
    candidate = Candidate(
        base_model="tiny",
        method="full",
        run_id=result.tracking.run_id,
        model_id=result.tracking.model_id,
        test=split_metrics(truth, predicted, sorted(set(truth))),
        test_predictions=str(path),
        blocked=blocked,
    )
    run = promotion_check.with_options(flow_run_name=f"check-{name}")
    return run(uri, config, candidate, result.splits.test.path, str(tmp_path / "promotion"), return_state=True)


def aliases(uri: str, name: str) -> dict[str, str]:
    model = mlflow.MlflowClient(uri, registry_uri=uri).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_a_better_candidate_is_promoted_and_the_old_champion_kept_as_previous(trained: Any, tmp_path: Path) -> None:
    uri, result = trained
    name, champion = with_champion(uri, result)
    truth = truth_of(result)
    outcome: PromotionResult = check(uri, result, name, truth, tmp_path).result()
    assert outcome.decision == "promoted" and outcome.champion_version == "2"
    assert outcome.comparison.champion_version == "1" and outcome.comparison.interval.low > 0
    real = split_metrics(truth, champion, sorted(set(truth)))
    assert outcome.comparison.champion.f1_macro == pytest.approx(real.f1_macro), "scored on the same test split"
    assert "is the new champion" in outcome.reason and "95%" in outcome.reason
    assert aliases(uri, name) == {"candidate": "2", "champion": "2", "previous": "1"}
    tags = find_version(uri, name, version="2").tags
    assert tags["promotion.decision"] == "promoted" and tags["dataset_sha256"] == "x"
    assert tags["model_family"] == "finetune"
    assert float(tags["test.f1_macro"]) == pytest.approx(1.0, abs=1e-6)
    files = {item.path for item in mlflow.MlflowClient(uri).list_artifacts(result.tracking.run_id, "promotion")}
    assert {"promotion/comparison.md", "promotion/confusion_candidate_champion.png"} <= files
    run_tag = mlflow.MlflowClient(uri).get_run(result.tracking.run_id).data.tags["champion"]
    assert run_tag.startswith(f"{name} v2: http") and f"/#/models/{name}/versions/2" in run_tag


def test_a_worse_candidate_or_a_class_regression_is_not_promoted(trained: Any, tmp_path: Path) -> None:
    uri, result = trained
    name, champion = with_champion(uri, result)
    truth = truth_of(result)
    right = [index for index, (real, said) in enumerate(zip(truth, champion, strict=True)) if real == said]
    wrong_label = {label: next(other for other in sorted(set(truth)) if other != label) for label in set(truth)}
    worse = [wrong_label[truth[index]] if index in right[:3] else said for index, said in enumerate(champion)]
    rejected = check(uri, result, name, worse, tmp_path).result()
    assert rejected.decision == "rejected" and "not better with 95% confidence" in rejected.message
    assert "v1 stays champion" in rejected.reason
    # Perfect on every class but one, which it always gets wrong: the champion's best class.
    scores = split_metrics(truth, champion, sorted(set(truth))).per_class
    strongest = max((label for label in scores if scores[label]["support"] >= 8), key=lambda label: scores[label]["f1"])
    dropped = [wrong_label[label] if label == strongest else label for label in truth]
    regressed = check(uri, result, name, dropped, tmp_path).result()
    assert regressed.decision == "rejected" and set(regressed.comparison.regressions) == {strongest}
    never = check(uri, result, name, truth, tmp_path, mode="never").result()
    assert never.decision == "not_attempted" and "promotion.mode=never" in never.reason
    assert aliases(uri, name) == {"candidate": "4", "champion": "1"}
    assert find_version(uri, name, version="3").tags["promotion.decision"] == "rejected"


def test_a_blocked_candidate_is_registered_but_never_champion_even_without_one(trained: Any, tmp_path: Path) -> None:
    uri, result = trained
    name = f"m-{uuid.uuid4().hex[:8]}"
    truth = truth_of(result)
    state = check(uri, result, name, truth, tmp_path, blocked="the fine-tune scores below the baseline")
    outcome: PromotionResult = state.result()
    assert outcome.decision == "rejected" and outcome.champion_version is None
    assert "below the baseline" in outcome.reason and "there is no champion" in outcome.reason
    assert aliases(uri, name) == {"candidate": "1"}


def answer_when_paused(flow_run_name: str, answer: dict[str, Any] | None, seen: dict[str, Any]) -> None:
    """Wait for the named flow run to pause; read its form; resume it with `answer` (None: leave it)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.flow_runs import resume_flow_run
    from prefect.input.run_input import keyset_from_paused_state

    deadline = time.monotonic() + 300  # a loaded CI machine can take a while to reach the pause
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:  # a busy SQLite server may answer 503 once: a person would try again too
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name]))
                )
                if runs and runs[0].state.is_paused():
                    keyset = keyset_from_paused_state(runs[0].state)
                    seen["description"] = client.read_flow_run_input(runs[0].id, keyset["description"])
                    seen["schema"] = client.read_flow_run_input(runs[0].id, keyset["schema"])
                    if answer is not None:
                        resume_flow_run(runs[0].id, run_input=answer)
                    return
            except Exception as error:
                seen.setdefault("errors", []).append(repr(error))
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
    name, _ = with_champion(uri, result)
    seen: dict[str, Any] = {}
    # The thread runs in a copy of this context: Prefect's settings (the test server's URL) are context variables.
    context = contextvars.copy_context()
    reviewer = threading.Thread(target=context.run, args=(answer_when_paused, f"check-{name}", answer, seen))
    reviewer.start()
    # An answered form resumes the run at once, so its timeout only has to outlast a slow machine.
    hours = (4 if answer is None else 300) / 3600
    state = check(uri, result, name, truth_of(result), tmp_path, mode="approval", approval_timeout_hours=hours)
    reviewer.join()
    assert state.is_completed(), "a rejection or a timeout does not fail the run"
    outcome: PromotionResult = state.result()
    assert outcome.decision == decision and aliases(uri, name)["champion"] == champion, seen.get("errors")
    assert "| f1_macro |" in seen["description"] and "champion v1" in seen["description"]
    assert {"approve", "comment", "reviewer"} <= set(json.loads(seen["schema"])["properties"])
    tags = find_version(uri, name, version="2").tags
    assert tags["promotion.decision"] == decision
    if answer:
        assert tags["promotion.comment"] == answer["comment"] and tags["promotion.reviewer"] == answer["reviewer"]
