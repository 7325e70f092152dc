"""The `sweep` flow: rounds of hyperparameter trials until the model is good enough."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.promote import champion_challenger
from flows.trial import trial
from flows.validate import check_data
from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.core.gpus import one_gpu
from tasks.data.split import split_dataset
from tasks.model.select import select_base_model
from tasks.registry.versions import PromotionResult
from tasks.sweep.candidate import baseline_candidate, compete_with_baseline, sweep_candidate
from tasks.sweep.dispatch import Handle, in_process, on_workers, run_round
from tasks.sweep.record import check_storage, round_lease
from tasks.sweep.report import sweep_report
from tasks.sweep.requeue import check_round, queue_next_round
from tasks.sweep.state import BestModel, RoundDecision, SweepResult, SweepState
from tasks.sweep.steps import (
    ask_trials,
    begin_sweep,
    check_trial_device,
    close_round,
    evaluate_best_trial,
    final_state,
    find_sweep,
    finish_sweep,
    open_round,
    plan_search_space,
    start_sweep,
    use_stored_config,
)
from tasks.tracking.live import mark_failed, mark_killed
from tasks.tracking.model import example_text
from tasks.tracking.store import TrackingTarget, check_tracking, run_link
from tasks.tracking.training import log_baseline_run


def register_best(
    config: SweepPipelineConfig, state: SweepState, decision: RoundDecision, target: TrackingTarget
) -> tuple[BestModel | None, PromotionResult | None]:
    """At the sweep's end: the candidate (the best trial, refit on train + validation when its
    trials were cross-validated or the validation split is small) scored on the test split, the
    TF-IDF baseline competing with it on the same held-out rows (the baseline is registered instead
    when it is better beyond noise), the winner registered (alias `candidate`), champion/challenger
    when the target was met (only register when the budget ran out first), and the comparison report."""
    best = evaluate_best_trial(config, state, target)
    promotion = None
    if best is not None and config.promotion.register_model:
        baseline, family = compete_with_baseline(config, state, best)
        best.family = family
        candidate = sweep_candidate(best, state, decision, config.sweep)
        links = {"candidate run (best trial)": run_link(target, best.run_id)}
        if baseline is not None:
            example = example_text(state.splits.validation) if config.tracking.log_model else None
            run_id, model_id = log_baseline_run(target, state.parent_run_id, baseline, example)
            links["baseline run"] = run_link(target, run_id)
            if family.family == "baseline":
                candidate = baseline_candidate(baseline, run_id, model_id, config.sweep)
                links = {"candidate run (baseline)": links["baseline run"]}
        promotion = champion_challenger(
            target.uri,
            config.promotion,
            candidate,
            state.splits.test.path,
            config.eval.batch_size,
            Path(state.folder) / "promotion",
            tags={
                "dataset_sha256": state.dataset_sha256 or state.splits.train.sha256,
                "test_sha256": state.splits.test.sha256,
                "sweep_id": state.sweep_id,
                "trial_number": str(best.trial.number) if candidate.family == "finetune" else "",
                "mlflow_run": run_link(target, candidate.run_id),
            },
            links={**links, "sweep run": run_link(target, state.parent_run_id)},
        )
    sweep_report(config, state, target, best, promotion)
    return best, promotion


def run_trial_flow(config: SweepPipelineConfig, sweep_id: str, number: int) -> None:
    """Trial `number` as a run of the trial flow here (module-level: a trial process unpickles it)."""
    trial(config=config, sweep_id=sweep_id, trial_number=number, return_state=True)


def trial_deployment(settings: SweepConfig) -> str | None:
    """The deployment whose runs this round's trials are, placed by its work pool: a round run from
    a deployment, with `sweep.trial_deployment` set; else None (the trials run in this process, or
    in processes this round starts)."""
    from prefect.runtime import deployment

    return settings.trial_deployment if deployment.id else None


def trains_here(config: SweepPipelineConfig) -> bool:
    """Whether the trials train in this process: one at a time, not on the work pool. Such a round
    holds a GPU of the host for them (tasks/core/gpus.py) from before its first CUDA call; trials
    in processes of their own or on workers each take one themselves."""
    return not trial_deployment(config.sweep) and config.sweep.max_concurrent_trials <= 1


def trial_starter(config: SweepPipelineConfig, sweep_id: str) -> AbstractContextManager[Callable[[int], Handle]]:
    """How this round starts a trial: a run of the trial deployment when this round runs from a
    deployment and `sweep.trial_deployment` is set, else the trial flow in this process (one at a
    time) or in processes the round starts (several at once)."""
    settings = config.sweep
    deployment = trial_deployment(settings)
    if deployment:
        parameters = config.model_dump(mode="json")
        return on_workers(
            deployment,
            lambda number: {"config": parameters, "sweep_id": sweep_id, "trial_number": number},
        )
    return in_process(partial(run_trial_flow, config, sweep_id), settings.max_concurrent_trials)


# A local round's one-at-a-time trials run in a task run of it (typed loosely: Prefect's decorator
# expects TaskRunner[PrefectFuture], which its own thread-pool runner is not to mypy).
TRIAL_TASK_RUNNER: Any = ThreadPoolTaskRunner(max_workers=1)


@flow(
    name="sweep",
    task_runner=TRIAL_TASK_RUNNER,
    on_failure=[mark_failed],
    on_crashed=[mark_failed],
    on_cancellation=[mark_killed],
)
def sweep(
    config: SweepPipelineConfig = SweepPipelineConfig(),  # noqa: B008
    sweep_id: Annotated[str | None, Field(max_length=100)] = None,
    round_number: Annotated[int, Field(ge=1, le=100)] = 1,
) -> SweepResult | State:
    """Tune hyperparameters in rounds until validation F1 reaches `sweep.target_f1`.

    Round 1 validates and splits the data once and chooses the base model; every round asks Optuna
    (seeded TPE, warm-started from all earlier trials) for trials and runs each as a `trial` flow
    run (on the work pool of `sweep.trial_deployment` when set, else in this process), which
    fine-tunes it with per-epoch pruning and logs it as a child of the sweep's MLflow run. The
    study in the sweep's database is the record of trials, rounds, claims and the budget. Below
    target with budget left, the next round is handed on: run from a deployment, as a new flow run
    (by this run or by the deployment's trigger on `tuneloop.sweep.below-threshold`); run locally,
    in this process. A round that was already claimed is skipped, and the budget fixed when the
    sweep started (`max_rounds`, `max_trials`, `max_hours`) always ends it. At the end the best
    trial is scored on the test split and registered (alias `candidate`); when the target was met
    it is compared with the `champion` on the same split and promoted per `promotion.mode`. A
    comparison report goes to the sweep's run.

    Args:
        config: Every setting of the sweep, grouped by step; the search space, target and budget
            are in `sweep`. Paths are relative to the deployment's working directory; endpoints and
            secrets come from the worker's environment.
        sweep_id: Continue this sweep (its id); empty: start a new one.
        round_number: The round this run performs (1 = the first).
    """
    state = None
    # A later round runs the sweep's own config (tracking, trust, data, model), never an event's.
    if sweep_id is not None:
        state = find_sweep(config, sweep_id)
        config = use_stored_config(config, state)
    else:
        config = plan_search_space(config)
    # Bad settings are refused before a new sweep creates anything.
    check_trial_device(config)
    check_storage(config.sweep)
    target = check_tracking(config.tracking)
    if state is None:
        new_id, folder = begin_sweep()
        data = check_data(config, folder)
        clean, test = data.clean_tables()
        splits = split_dataset(clean, config.split, folder / "splits", test)
    # The GPU is chosen (waiting while the host's are all held) after the settings and the data are
    # checked, which start no CUDA, and before the first CUDA call (the model screening). Trials
    # that train here share this process's hold; trials elsewhere take a GPU each, and this process
    # holds its own (the same one again) only to screen the models and to score the best trial.
    log, device = get_run_logger(), config.train.device
    with one_gpu(log, device if trains_here(config) else "cpu"):
        if state is None:
            with one_gpu(log, device):
                selection = select_base_model(config.model, config.train, config.eval, splits, folder / "selection")
            state = start_sweep(config, new_id, folder, data.data.dataset_sha256, splits, selection, target)
        while True:
            refusal = check_round(config, state, round_number)
            if refusal:
                return final_state(finish_sweep(state, refusal, target))
            with round_lease(state.storage, state.sweep_id, round_number, str(flow_run.id)):
                open_round(state, target)
                new, unfinished = ask_trials(config, state, round_number)
                with trial_starter(config, state.sweep_id) as start:
                    run_round(state, new, unfinished, config.sweep.max_concurrent_trials, start, log)
                state, decision = close_round(config, state, round_number, target)
            if decision.action != "next_round":
                with one_gpu(log, device):
                    best, promotion = register_best(config, state, decision, target)
                return final_state(finish_sweep(state, decision, target, promotion=promotion, candidate=best))
            queued = queue_next_round(config, state, round_number, decision)
            if queued:
                return finish_sweep(state, decision, target, queued)
            round_number += 1
