"""Handing a sweep's next round on, and guarding rounds that arrive from a queue.

Below target with budget left, a round run from a deployment hands the next round on in one of
two ways (`sweep.requeue`):
- `run_deployment`: this flow run queues round N+1 itself as a new run of its deployment, with the
  idempotency key `sweep_id:round` (a second request returns the same run), and emits the event
  `tuneloop.sweep.below-threshold` for automations and notifications;
- `trigger`: it only emits the event, labelled so that the sweep deployment's trigger in
  `deployments/prefect.yaml` queues round N+1 with the sweep id and round number in the event's
  payload. The payload carries no config: whoever can post an event can at most ask for a round of
  an existing sweep, which runs with the config stored when that sweep started.

Either way, a queued round first passes `check_round`: a round that another flow run already
claimed (atomically, in the sweep's database: tasks/sweep/record.py) or that is closed is skipped,
and no round starts past the sweep's stored budget, so neither a duplicate event nor a
misconfigured trigger nor a later run with a bigger budget can loop.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.sweep.rounds import spent_budget
from tasks.sweep.state import QueuedRound, RoundDecision, SweepState

BELOW_THRESHOLD = "tuneloop.sweep.below-threshold"


def already_run(state: SweepState, round_number: int, claimant: str | None) -> RoundDecision:
    """The refusal of a round that is closed (no claimant) or that another flow run holds."""
    from tasks.sweep.record import LEASE_SECONDS

    if claimant is None:
        message = f"Round {round_number} of {state.sweep_id} was already run: skipped."
    else:
        message = (
            f"Round {round_number} of {state.sweep_id} is held by flow run {claimant}: skipped. If that run is "
            f"gone (killed), its claim lapses {LEASE_SECONDS} s after its last renewal; run this again then and "
            "it takes the round over."
        )
    return RoundDecision(action="already_claimed", best_score=None, best_trial=None, message=message)


def budget_refusal(state: SweepState, round_number: int, trials_so_far: int) -> RoundDecision | None:
    """Why round `round_number` must not start under the sweep's stored budget, or None."""
    spent = spent_budget(state, round_number, trials_so_far)
    if not spent:
        return None
    return RoundDecision(
        action="budget_spent",
        best_score=None,
        best_trial=None,
        message=f"Round {round_number} of {state.sweep_id} not started: budget spent ({', '.join(spent)}); "
        f"extend it with `tuneloop sweep --continue {state.sweep_id} --max-rounds N`.",
    )


def budget_differences(config: SweepConfig, state: SweepState) -> list[str]:
    """The budget settings of this run that differ from the sweep's stored budget (and do not apply)."""
    stored = state.budget.limits()
    return [
        f"{name}={getattr(config, name)} (stored: {stored[name]:g})"
        for name in stored
        if getattr(config, name) != stored[name]
    ]


@task(name="check_round")
def check_round(pipeline: SweepPipelineConfig, state: SweepState, round_number: int) -> RoundDecision | None:
    """Claim `round_number` for this flow run, or say why it must not run: closed already, claimed by
    another flow run (one INSERT in the sweep's database decides), or past the stored budget."""
    from prefect.runtime import flow_run

    from tasks.sweep.record import claim_round, closed_rounds, study_trials, sweep_study

    log, run_id = get_run_logger(), str(flow_run.id)
    study = sweep_study(state)
    differences = budget_differences(pipeline.sweep, state)
    if differences:
        log.warning(
            "This run's %s do not apply: the budget of %s was fixed when it started; extend it with "
            "`tuneloop sweep --continue %s --max-rounds N`.",
            ", ".join(differences),
            state.sweep_id,
            state.sweep_id,
        )
    if round_number in closed_rounds(study):
        refusal: RoundDecision | None = already_run(state, round_number, None)
    else:
        refusal = budget_refusal(state, round_number, len(study_trials(study)))
        if refusal is None and (holder := claim_round(state.storage, state.sweep_id, round_number, run_id)):
            refusal = already_run(state, round_number, holder)
    if refusal:
        log.warning(refusal.message)
    return refusal


@task(name="queue_next_round")
def queue_next_round(
    pipeline: SweepPipelineConfig, state: SweepState, round_number: int, decision: RoundDecision
) -> QueuedRound | None:
    """From a deployment: hand round N+1 on (see the module docstring) and emit the event.
    Without a deployment: nothing (the caller runs the next round in this process)."""
    from prefect.runtime import deployment, flow_run

    if not deployment.id:
        return None
    config: SweepConfig = pipeline.sweep
    next_round, name = round_number + 1, f"{flow_run.flow_name}/{deployment.name}"
    run_id = None
    if config.requeue == "run_deployment":
        run_id = request_round(name, pipeline, state.sweep_id, next_round)
    announce_below_threshold(pipeline, state.sweep_id, round_number, decision, name)
    queued = QueuedRound(round=next_round, by=config.requeue, flow_run_id=run_id)
    get_run_logger().info(
        "Round %d of %s handed on by %s%s",
        next_round,
        state.sweep_id,
        config.requeue,
        f" as flow run {run_id}" if run_id else " (the deployment's trigger queues it)",
    )
    return queued


def request_round(deployment_name: str, pipeline: SweepPipelineConfig, sweep_id: str, round_number: int) -> str:
    """A flow run of the sweep deployment for `round_number`, created once per (sweep, round)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    # run_deployment is sync/async-dual; called from sync code it returns the FlowRun itself.
    run: FlowRun = run_deployment(  # type: ignore[assignment]
        deployment_name,
        parameters=round_parameters(pipeline, sweep_id, round_number),
        timeout=0,
        idempotency_key=f"{sweep_id}:{round_number}",
        as_subflow=False,
    )
    return str(run.id)


def round_parameters(pipeline: SweepPipelineConfig, sweep_id: str, round_number: int) -> dict[str, Any]:
    """The sweep flow's parameters for one round."""
    return {"config": pipeline.model_dump(mode="json"), "sweep_id": sweep_id, "round_number": round_number}


def below_threshold_event(
    pipeline: SweepPipelineConfig, sweep_id: str, round_number: int, decision: RoundDecision, deployment: str
) -> dict[str, Any]:
    """The event's resource and payload. The label `tuneloop.sweep.requeue` tells a deployment
    trigger whether it should queue the next round (`trigger`) or the run already did; the label
    `tuneloop.sweep.deployment` (flow/deployment) which deployment's trigger it is for."""
    config: SweepConfig = pipeline.sweep
    return {
        "event": BELOW_THRESHOLD,
        "resource": {
            "prefect.resource.id": f"tuneloop.sweep.{sweep_id}",
            "prefect.resource.name": sweep_id,
            "tuneloop.sweep.requeue": config.requeue,
            "tuneloop.sweep.deployment": deployment,
        },
        "payload": {
            "sweep_id": sweep_id,
            "round": round_number,
            "next_round": round_number + 1,
            "best_f1": decision.best_score,
            "target": config.target_f1,
            "metric": config.metric,
            "max_rounds": config.max_rounds,
            # only which round of which sweep: the round runs the sweep's stored config (never an event's)
            "parameters": {"sweep_id": sweep_id, "round_number": round_number + 1},
        },
    }


def announce_below_threshold(
    pipeline: SweepPipelineConfig, sweep_id: str, round_number: int, decision: RoundDecision, deployment: str
) -> None:
    """Emit the event automations, notifications and the sweep deployment's trigger hang on."""
    from prefect.events import emit_event

    emit_event(**below_threshold_event(pipeline, sweep_id, round_number, decision, deployment))
