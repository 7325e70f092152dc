"""Champion/challenger inside a flow run: register the run's model (alias `candidate`), score the
current `champion` on the same test split, and promote per the configured mode: automatically,
after a Prefect approval form, or never. The comparison is published to MLflow and Prefect.

The registry operations themselves (versions, aliases, the rule, rollback) are in tasks/registry.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from tasks.errors import first_line
from tasks.evaluate import SplitMetrics, plot_confusion_matrices, split_metrics
from tasks.predict import predictions
from tasks.registry import (
    CHAMPION,
    Comparison,
    Decision,
    ModelVersionRef,
    PromotionConfig,
    PromotionResult,
    client,
    compare,
    find_version,
    record,
    register_model,
    set_champion,
)


class ChampionScores(BaseModel):
    """The champion's scores on this run's test split, or why there are none."""

    version: str | None
    metrics: SplitMetrics | None
    confusion_pair: str | None
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
    other data when the data changed) and draw both confusion matrices side by side."""
    champion = find_version(tracking_uri, config.model_name, CHAMPION)
    if champion is None:
        return ChampionScores(version=None, metrics=None, confusion_pair=None)
    version = str(champion.version)
    test = pd.read_parquet(test_path)
    y_true = test["label"].astype(str).tolist()
    try:
        model = f"models:/{config.model_name}/{version}"
        predicted = predictions(model, test["text"].tolist(), batch_size, tracking_uri)
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
    return ChampionScores(version=version, metrics=split_metrics(y_true, predicted, labels), confusion_pair=str(pair))


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
            f"| score | candidate v{version.version} | champion v{comparison.champion_version} | delta |",
            "|---|---|---|---|",
        ]
        for key in ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"):
            mine, theirs = getattr(comparison.candidate, key), getattr(comparison.champion, key)
            lines.append(f"| {key} | {mine:.4f} | {theirs:.4f} | {mine - theirs:+.4f} |")
        for label, delta in comparison.class_deltas.items():
            mine = comparison.candidate.per_class[label]["f1"]
            lines.append(f"| F1 `{label}` | {mine:.4f} | {mine - delta:.4f} | {delta:+.4f} |")
    lines += ["", *(f"- {name}: {link}" for name, link in links.items())]
    return "\n".join(lines)


def ask_approval(markdown: str, timeout_hours: float) -> tuple[Decision, str, str]:
    """Pause the flow run with an approve/reject form; (decision, comment, reviewer). No answer in
    time rejects."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.input import RunInput

    class PromotionApproval(ApprovalInput, RunInput):
        pass

    timeout = max(1, round(timeout_hours * 3600))
    try:
        answer = pause_flow_run(
            wait_for_input=PromotionApproval.with_initial_data(description=markdown, approve=False),
            timeout=timeout,
            poll_interval=min(5, max(1, timeout // 4)),
        )
    except FlowPauseTimeout:
        # The rule is ours (no answer rejects), so the run goes on: back to Running, which the
        # server would refuse after the pause expired unless forced; otherwise the run would fail.
        from prefect import get_client
        from prefect.context import FlowRunContext
        from prefect.states import Running

        context = FlowRunContext.get()
        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(
                context.flow_run.id, Running(message="approval timed out: candidate not promoted"), force=True
            )
        return "timeout", f"no answer within {timeout_hours:g} h", ""
    return ("approved" if answer.approve else "rejected_by_reviewer"), answer.comment, answer.reviewer


def version_tags(metrics: SplitMetrics, extra: dict[str, str]) -> dict[str, str]:
    """Tags of a new version: its test metrics and where it came from."""
    tags = {f"test.{key}": f"{value:.6f}" for key, value in metrics.model_dump().items() if key != "per_class"}
    return {**tags, **{key: value for key, value in extra.items() if value}}


def promotion_decision(config: PromotionConfig, comparison: Comparison, markdown: str) -> tuple[Decision, str, str]:
    """(decision, comment, reviewer) per `config.mode`: never, the rule alone, or the rule and a person."""
    if config.mode == "never":
        return "not_attempted", "", ""
    if not comparison.eligible:
        return "rejected", "", ""
    if config.mode == "approval":
        return ask_approval(markdown, config.approval_timeout_hours)
    return "promoted", "", ""


def champion_challenger(
    tracking_uri: str,
    config: PromotionConfig,
    run_id: str,
    candidate: SplitMetrics,
    test_path: str,
    candidate_predictions: str,
    batch_size: int,
    folder: Path,
    tags: dict[str, str],
    links: dict[str, str],
) -> PromotionResult:
    """Register the run's `model` as a new version (alias candidate), score the champion on the same
    test split, and promote per `config.mode`. Runs inside a flow (the approval form pauses it)."""
    log = get_run_logger()
    version = register_model(tracking_uri, config.model_name, run_id, version_tags(candidate, tags))
    champion = evaluate_champion(tracking_uri, config, test_path, candidate_predictions, batch_size, folder)
    comparison = compare(candidate, champion.metrics, champion.version, config)
    if champion.problem:
        comparison = comparison.model_copy(update={"eligible": False, "reason": champion.problem})
    notes = {"promotion.reason": comparison.reason, "promotion.compared_with": champion.version or ""}
    links = dict(links)
    if champion.confusion_pair:
        links["confusion matrices"] = "artifact promotion/confusion_candidate_champion.png of the candidate run"
    markdown = comparison_markdown(comparison, version, links)
    decision, comment, reviewer = promotion_decision(config, comparison, markdown)
    notes.update({"promotion.comment": comment, "promotion.reviewer": reviewer})
    promoted = decision in ("promoted", "approved")
    if promoted:
        set_champion(tracking_uri, version.name, version.version, decision, notes)
        message = f"{version.name} v{version.version} is the new champion ({comparison.reason})."
    else:
        record(tracking_uri, version.name, version.version, {**notes, "promotion.decision": decision})
        message = (
            f"{version.name} v{version.version} registered as candidate, not promoted: {decision} "
            f"({comparison.reason})."
        )
    log.info(message)
    publish_comparison(tracking_uri, run_id, folder, markdown, message)
    return PromotionResult(
        version=version,
        comparison=comparison,
        decision=decision,
        champion=version.version if promoted else champion.version,
        message=message,
        comment=comment,
        reviewer=reviewer,
    )


def publish_comparison(tracking_uri: str, run_id: str, folder: Path, markdown: str, message: str) -> None:
    """The comparison as `promotion/comparison.md` (with the confusion matrices) in the candidate's
    MLflow run, and as a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact

    folder.mkdir(parents=True, exist_ok=True)
    text = f"{markdown}\n\n**Decision:** {message}\n"
    (folder / "comparison.md").write_text(text, encoding="utf-8")
    client(tracking_uri).log_artifacts(run_id, str(folder), "promotion")
    create_markdown_artifact(key="promotion", markdown=text, description=message)
