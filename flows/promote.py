"""Champion/challenger inside a flow run: register the run's model (alias `candidate`), score the
current `champion` on the same test split, and promote per `promotion.mode`: automatically,
after a Prefect approval form (the run pauses), or never. Runs inside the train and sweep flows."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from tasks.config.promotion import PromotionConfig
from tasks.registry.promotion import (
    ApprovalInput,
    comparison_markdown,
    evaluate_champion,
    publish_comparison,
    version_tags,
)
from tasks.registry.versions import (
    Candidate,
    Comparison,
    Decision,
    PromotionResult,
    champion_rule,
    promotion_sentence,
    record,
    register_model,
    set_champion,
)


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
        from prefect.runtime import flow_run
        from prefect.states import Running

        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(
                flow_run.id, Running(message="approval timed out: candidate not promoted"), force=True
            )
        return "timeout", f"no answer within {timeout_hours:g} h", ""
    return ("approved" if answer.approve else "rejected_by_reviewer"), answer.comment, answer.reviewer


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
    candidate: Candidate,
    test_path: str,
    batch_size: int,
    folder: Path,
    tags: dict[str, str],
    links: dict[str, str],
) -> PromotionResult:
    """Register the candidate's logged model as a new version (alias candidate), score the champion on the
    same test split, compare both row by row, and promote per `config.mode`. A `blocked` candidate is
    registered, never promoted. Runs inside a flow (the approval form pauses it)."""
    log = get_run_logger()
    tags = {**tags, "model_family": candidate.family, "base_model": candidate.base_model, "method": candidate.method}
    version = register_model(
        tracking_uri, config.model_name, candidate.run_id, candidate.model_id, version_tags(candidate.test, tags)
    )
    champion = evaluate_champion(tracking_uri, config, test_path, candidate.test_predictions, batch_size, folder)
    comparison = champion_rule(candidate.test, champion.metrics, champion.version, config, champion.paired)
    if champion.problem or candidate.blocked:
        comparison = comparison.model_copy(update={"eligible": False, "reason": champion.problem or candidate.blocked})
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
    else:
        record(tracking_uri, version.name, version.version, {**notes, "promotion.decision": decision})
    message = promotion_sentence(version, decision, comparison.reason, champion.version)
    log.info(message)
    publish_comparison(tracking_uri, candidate.run_id, folder, markdown, message)
    return PromotionResult(
        version=version,
        comparison=comparison,
        decision=decision,
        champion=version.version if promoted else champion.version,
        message=message,
        comment=comment,
        reviewer=reviewer,
    )
