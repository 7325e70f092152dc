"""The champion/challenger steps a flow runs: score the champion on the candidate's test split,
the comparison a reviewer reads, the new version's tags, and publishing the comparison."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from tasks.config.promotion import PromotionConfig
from tasks.core.errors import first_line
from tasks.core.metrics import SplitMetrics, split_metrics
from tasks.core.paired import PairedComparison, paired_bootstrap
from tasks.model.baseline import BaselineReport, FamilyChoice
from tasks.model.evaluate import EvalReport, plot_confusion_matrices
from tasks.model.finetune import TrainedModelRef
from tasks.model.predict import predictions
from tasks.registry.fetch import fetch_model
from tasks.registry.versions import (
    CHAMPION,
    Candidate,
    Comparison,
    ModelVersionRef,
    find_version,
)
from tasks.tracking.store import TrackedRun, mlflow_client


class ChampionScores(BaseModel):
    """The champion's scores on this run's test split, or why there are none."""

    version: str | None
    metrics: SplitMetrics | None
    confusion_pair: str | None
    paired: PairedComparison | None = None  # candidate minus champion, row by row
    problem: str | None = None


@task(name="evaluate_champion")
def evaluate_champion(
    tracking_uri: str,
    config: PromotionConfig,
    test_path: str,
    candidate_predictions: str,
    batch_size: int,
    folder: Path,
) -> ChampionScores:
    """Score the current champion on the candidate's test split (the stored metrics were measured on
    other data when the data changed), compare both row by row (paired bootstrap) and draw both
    confusion matrices side by side."""
    champion = find_version(tracking_uri, config.model_name, CHAMPION)
    if champion is None:
        return ChampionScores(version=None, metrics=None, confusion_pair=None)
    version = str(champion.version)
    test = pd.read_parquet(test_path)
    y_true = test["label"].astype(str).tolist()
    try:
        model = f"models:/{config.model_name}/{version}"
        predicted = predictions(fetch_model(model, tracking_uri), test["text"].tolist(), batch_size)
    except Exception as error:  # a champion that cannot be loaded blocks promotion, it does not crash the run
        problem = f"champion v{version} could not be evaluated: {first_line(error)}"
        get_run_logger().warning(problem)
        return ChampionScores(version=version, metrics=None, confusion_pair=None, problem=problem)
    labels = sorted(set(y_true))
    candidate = pd.read_csv(candidate_predictions, dtype=str)["predicted"].tolist()
    folder.mkdir(parents=True, exist_ok=True)
    pair = plot_confusion_matrices(
        y_true,
        {"candidate": candidate, f"champion v{version}": predicted},
        sorted(set(y_true) | set(candidate) | set(predicted)),
        folder / "confusion_candidate_champion.png",
    )
    paired = paired_bootstrap(y_true, candidate, predicted, config.metric, config.confidence)
    return ChampionScores(
        version=version, metrics=split_metrics(y_true, predicted, labels), confusion_pair=str(pair), paired=paired
    )


def baseline_offer(
    baseline: BaselineReport, run_id: str, model_id: str | None, blocked: str | None = None
) -> Candidate:
    """The TF-IDF baseline as a candidate: its logged model (`run_id`, `model_id`) and test predictions."""
    return Candidate(
        family="baseline",
        base_model=baseline.name,
        method="tfidf",
        run_id=run_id,
        model_id=model_id,
        test=baseline.test,
        test_predictions=str(baseline.predictions_path),
        blocked=blocked,
    )


def run_candidate(
    tracked: TrackedRun,
    evaluation: EvalReport,
    baseline: BaselineReport,
    choice: FamilyChoice,
    trained: TrainedModelRef,
) -> Candidate:
    """What a training run offers the registry: its fine-tune, or the baseline when that won."""
    if choice.family == "baseline":
        return baseline_offer(baseline, str(tracked.baseline_run_id), tracked.baseline_model_id)
    return Candidate(
        family="finetune",
        base_model=trained.base_model,
        method=trained.method,
        run_id=tracked.run_id,
        model_id=tracked.model_id,
        test=evaluation.test,
        test_predictions=evaluation.predictions_path,
        blocked=choice.blocked,
    )


class ApprovalInput(BaseModel):
    """The reviewer's answer in the Prefect UI."""

    approve: bool = Field(False, description="Promote this candidate to champion.")
    comment: str = Field("", max_length=2000, description="Why; stored as a tag on the model version.")
    reviewer: str = Field("", max_length=200, description="Your name.")


def comparison_markdown(comparison: Comparison, version: ModelVersionRef, links: dict[str, str]) -> str:
    """The comparison a reviewer reads: overall and per-class deltas, links to both MLflow runs."""
    lines = [f"# Promote `{version.name}` v{version.version} to champion?", ""]
    if comparison.champion is None:
        lines.append("There is no champion yet.")
    else:
        lines += [
            f"Both scored on this run's test split. Rule: {comparison.reason} "
            f"({'eligible' if comparison.eligible else 'not eligible'}).",
            "",
            f"| score | candidate v{version.version} | champion v{comparison.champion_version} | delta "
            "| paired bounds |",
            "|---|---|---|---|---|",
        ]
        for key in ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"):
            mine, theirs = getattr(comparison.candidate, key), getattr(comparison.champion, key)
            bounds = comparison.interval if comparison.interval and comparison.interval.metric == key else None
            shown = bounds.bounds() if bounds else ""
            lines.append(f"| {key} | {mine:.4f} | {theirs:.4f} | {mine - theirs:+.4f} | {shown} |")
        for label, delta in comparison.class_deltas.items():
            mine = comparison.candidate.per_class[label]["f1"]
            bounds = comparison.class_intervals.get(label)
            shown = bounds.bounds() if bounds else ""
            support = int(comparison.candidate.per_class[label].get("support", 0))
            lines.append(
                f"| F1 `{label}` ({support} texts) | {mine:.4f} | {mine - delta:.4f} | {delta:+.4f} | {shown} |"
            )
    lines += ["", *(f"- {name}: {link}" for name, link in links.items())]
    return "\n".join(lines)


def version_tags(metrics: SplitMetrics, extra: dict[str, str]) -> dict[str, str]:
    """Tags of a new version: its test metrics and where it came from."""
    tags = {f"test.{key}": f"{value:.6f}" for key, value in metrics.model_dump().items() if key != "per_class"}
    return {**tags, **{key: value for key, value in extra.items() if value}}


def publish_comparison(tracking_uri: str, run_id: str, folder: Path, markdown: str, message: str) -> None:
    """The comparison as `promotion/comparison.md` (with the confusion matrices) in the candidate's
    MLflow run, and as a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact

    folder.mkdir(parents=True, exist_ok=True)
    text = f"{markdown}\n\n**Decision:** {message}\n"
    (folder / "comparison.md").write_text(text, encoding="utf-8")
    mlflow_client(tracking_uri).log_artifacts(run_id, str(folder), "promotion")
    create_markdown_artifact(key="promotion", markdown=text, description=message)
