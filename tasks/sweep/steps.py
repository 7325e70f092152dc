"""The sweep's Prefect tasks, called by flows/sweep.py: plan the space, start the sweep (study and
MLflow parent run), run a trial, close a round, evaluate the best trial, finish."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.core.errors import ConfigError
from tasks.data.split import SplitReport
from tasks.model.plan import TrainingPlan, effective_train
from tasks.model.select import SelectionReport
from tasks.registry.versions import PromotionResult
from tasks.sweep.report import plot_trials
from tasks.sweep.rounds import decide, escalated, round_table
from tasks.sweep.search import open_study, optuna_storage, plot_importances, search_space, space_lines
from tasks.sweep.state import (
    BestModel,
    QueuedRound,
    RoundDecision,
    SweepResult,
    SweepState,
    TrialResult,
    all_trials,
    best_learning_rate,
    best_trial,
    load_state,
    new_sweep_id,
    save_state,
    sweep_folder,
)
from tasks.sweep.trial import gpu_limit_problem, gpu_slot, run_trial, trains_on_gpu
from tasks.tracking.store import TrackingTarget


@task(name="plan_search_space")
def plan_search_space(pipeline: SweepPipelineConfig) -> SweepPipelineConfig:
    """The sweep's config with only the hyperparameters it will search in sweep.search; the ones
    the train section sets are kept as set (logged)."""
    config: SweepConfig = pipeline.sweep
    searched, fixed = search_space(config, pipeline.train)
    log = get_run_logger()
    log.info("Searching %s", "; ".join(space_lines(config, searched)))
    if fixed:
        log.info("Held fixed (set in the train section): %s", ", ".join(f"{k}={v}" for k, v in fixed.items()))
    return pipeline.model_copy(update={"sweep": config.model_copy(update={"search": searched})})


@task(name="check_trial_device")
def check_trial_device(pipeline: SweepPipelineConfig) -> None:
    """Before any data work: the trials' device and precision exist on this machine (else every trial
    would fail), and on a GPU the configured concurrency limit exists (trials occupy it strictly)."""
    name = pipeline.sweep.gpu_concurrency_limit
    if trains_on_gpu(pipeline.train) and name:
        problem = gpu_limit_problem(name)
        if problem:
            raise ConfigError(problem)


@task(name="begin_sweep")
def begin_sweep(sweep_id: str | None) -> tuple[str, Path, SweepState | None]:
    """The sweep's id and folder, and its saved state when this is a later round of an existing sweep."""
    sweep_id = sweep_id or new_sweep_id()
    return sweep_id, sweep_folder(sweep_id), load_state(sweep_id)


@task(name="start_sweep")
def start_sweep(
    pipeline: SweepPipelineConfig,
    sweep_id: str,
    folder: Path,
    dataset_sha256: str,
    splits: SplitReport,
    selection: SelectionReport,
    target: TrackingTarget,
) -> SweepState:
    """Create the Optuna study and the MLflow parent run once, before any trial: parallel trials that
    each create a fresh SQLite database race on its schema (`UNIQUE constraint failed: alembic_version`)."""
    from tasks.tracking.store import flatten, run_tags, write_config
    from tasks.tracking.sweep import start_sweep_run

    config: SweepConfig = pipeline.sweep
    storage = optuna_storage(config)
    open_study(config, sweep_id, storage)
    parent = start_sweep_run(
        target,
        sweep_id,
        flatten(pipeline.model_dump(mode="json")),
        run_tags(dataset_sha256, {"base_model": selection.chosen.base_model}),
        write_config(pipeline, folder / "config.yaml"),
    )
    state = SweepState(
        sweep_id=sweep_id,
        folder=str(folder),
        started_at=datetime.now(UTC),
        study_name=sweep_id,
        storage=storage,
        splits=splits,
        dataset_sha256=dataset_sha256,
        model=selection.chosen,
        candidates=selection.runners_up(),
        parent_run_id=parent,
    )
    save_state(state)
    return state


@task(name="run_trial")
def run_sweep_trial(
    pipeline: SweepPipelineConfig, state: SweepState, round_number: int, slot: int, target: TrackingTarget
) -> TrialResult:
    """One trial: fine-tune a proposed configuration (on a GPU, holding the GPU concurrency limit).
    `slot` numbers the trial within the sweep; it seeds the sampler."""
    from tasks.tracking.store import flatten
    from tasks.tracking.sweep import log_trial

    config = escalated(pipeline.sweep, round_number, best_learning_rate(state))
    args = (
        config,
        state,
        pipeline.train,
        pipeline.eval,
        round_number,
        slot,
        pipeline.model.trust_remote_code,
        get_run_logger(),
    )
    with gpu_slot(config, on_gpu=trains_on_gpu(pipeline.train)):
        result = run_trial(*args)
    train = pipeline.train.model_copy(update=result.params)
    if result.plan:  # a finished trial: log what it ran with (epochs, learning rate, length)
        train = effective_train(train, TrainingPlan.model_validate(result.plan))
    trial_config = pipeline.model_copy(update={"train": train})
    result.mlflow_run_id = log_trial(
        target,
        state.parent_run_id,
        state.sweep_id,
        flatten(trial_config.model_dump(mode="json")),
        result.model_dump(),
        config.metric,
    )
    return result


@task(name="close_round")
def close_round(
    pipeline: SweepPipelineConfig,
    state: SweepState,
    round_number: int,
    trials: list[TrialResult],
    target: TrackingTarget,
) -> tuple[SweepState, RoundDecision]:
    """Record the round, decide what comes next, and show it: MLflow parent metrics and pictures,
    a Prefect table of the round's trials."""
    from prefect.artifacts import create_table_artifact

    from tasks.tracking.store import run_link
    from tasks.tracking.sweep import log_round

    config: SweepConfig = pipeline.sweep
    state.rounds.append({"round": round_number, "trials": [trial.model_dump() for trial in trials]})
    save_state(state)
    decision = decide(config, state, round_number, trials)
    decision.searched = space_lines(escalated(config, round_number, best_learning_rate(state)))
    history, folder = all_trials(state), Path(state.folder)
    pictures = {"history": plot_trials(history, config.metric, config.target_f1, folder / "sweep_history.png")}
    importance = plot_importances(open_study(config, state.study_name, state.storage), folder / "importances.png")
    if importance:
        pictures["importances"] = importance
    log_round(
        target,
        state.parent_run_id,
        round_number,
        config.metric,
        decision.best_score,
        len(trials),
        sum(trial.state == "pruned" for trial in trials),
        pictures,
    )
    create_table_artifact(
        key=f"sweep-round-{round_number}",
        table=round_table(trials),
        description=(
            f"{state.sweep_id} round {round_number}: {decision.message} Searched: {'; '.join(decision.searched)}. "
            f"MLflow parent run: {run_link(target, state.parent_run_id)}"
        ),
    )
    get_run_logger().info(decision.message)
    return state, decision


@task(name="finish_sweep")
def finish_sweep(
    state: SweepState,
    decision: RoundDecision,
    target: TrackingTarget,
    queued: QueuedRound | None = None,
    promotion: PromotionResult | None = None,
) -> SweepResult:
    """The sweep's result; when it is over, close the MLflow parent run with the outcome."""
    from tasks.tracking.sweep import finish_sweep_run

    trials, best = all_trials(state), best_trial(state)
    outcome = "next_round_queued" if queued else decision.action
    if outcome in ("target_met", "budget_spent"):
        finish_sweep_run(target, state.parent_run_id, outcome, decision.message)
    return SweepResult(
        sweep_id=state.sweep_id,
        outcome=outcome,
        message=decision.message,
        rounds=len(state.rounds),
        trials=len(trials),
        pruned=sum(trial.state == "pruned" for trial in trials),
        best_score=best.score if best else None,
        best_trial=best.number if best else None,
        best_model_path=best.model_path if best else None,
        parent_run_id=state.parent_run_id,
        next_round=queued,
        promotion=promotion,
        searched=decision.searched,
    )


def final_state(result: SweepResult) -> SweepResult | Any:
    """The flow's final state names the outcome: `Completed` when the target was met or the next
    round was handed on, a completed state named `TargetNotReached` (with the message) when the
    budget ran out first, and `Skipped` for a duplicate of a round another run claimed."""
    names = {"budget_spent": "TargetNotReached", "already_claimed": "Skipped"}
    if result.outcome not in names:
        return result
    from prefect.states import Completed

    return Completed(data=result, message=result.message, name=names[result.outcome])


@task(name="evaluate_best_trial")
def evaluate_best_trial(pipeline: SweepPipelineConfig, state: SweepState, target: TrackingTarget) -> BestModel | None:
    """Score the best trial's saved model on validation and test (trials only saw validation), and
    add the scores, the evaluation files and the model to its MLflow run. None without a completed trial."""
    from tasks.model.evaluate import evaluate_model
    from tasks.tracking.model import example_text
    from tasks.tracking.sweep import log_final_model

    best = best_trial(state)
    if best is None or best.model_path is None or best.mlflow_run_id is None:
        return None
    folder = Path(best.model_path).parent / "evaluation"
    report = evaluate_model.fn(
        best.model_path,
        state.splits.validation.path,
        state.splits.test.path,
        pipeline.eval,
        folder,
    )
    model_path = best.model_path if pipeline.tracking.log_model else None
    example = example_text(state.splits.validation) if model_path else ""
    model_id = log_final_model(target, best.mlflow_run_id, report, model_path, example)
    return BestModel(trial=best, evaluation=report, run_id=best.mlflow_run_id, model_id=model_id)
