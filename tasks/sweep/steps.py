"""The sweep's Prefect tasks, called by flows/sweep.py and flows/trial.py: plan the space, start
the sweep (study and MLflow parent run), ask a round's trials, run a trial, close a round, evaluate
the best trial, finish. The study is the record (tasks/sweep/record.py)."""

from __future__ import annotations

import socket
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
from tasks.sweep.record import (
    ask,
    close_round_record,
    closed_rounds,
    frozen_trial,
    load_sweep,
    optuna_storage,
    save_setup,
    study_trials,
    sweep_study,
    sweep_trials,
)
from tasks.sweep.report import plot_trials
from tasks.sweep.rounds import decide, escalated, folds_line, round_table, scored_rows, trials_this_round
from tasks.sweep.search import open_study, plot_importances, search_space, space_lines, suggest
from tasks.sweep.state import (
    BestModel,
    Budget,
    QueuedRound,
    RoundDecision,
    SweepResult,
    SweepState,
    TrialResult,
    best_learning_rate,
    best_of,
    new_sweep_id,
    sweep_folder,
)
from tasks.sweep.trial import gpu_limit_problem, gpu_slot, run_trial, trains_on_gpu, trial_folder
from tasks.tracking.store import TrackingTarget


@task(name="plan_search_space")
def plan_search_space(pipeline: SweepPipelineConfig) -> SweepPipelineConfig:
    """The sweep's config with only the hyperparameters it will search in sweep.search (the ones
    the train section sets are kept as set, logged) and the pruner that runs in sweep.pruner (auto
    resolved), as its record and its MLflow run show them."""
    config: SweepConfig = pipeline.sweep
    searched, fixed = search_space(config, pipeline.train)
    log = get_run_logger()
    log.info(
        "Searching %s; sampler %s, pruner %s", "; ".join(space_lines(config, searched)), config.sampler, config.pruning
    )
    if fixed:
        log.info("Held fixed (set in the train section): %s", ", ".join(f"{k}={v}" for k, v in fixed.items()))
    return pipeline.model_copy(
        update={"sweep": config.model_copy(update={"search": searched, "pruner": config.pruning})}
    )


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
def begin_sweep() -> tuple[str, Path]:
    """A new sweep's id and folder."""
    sweep_id = new_sweep_id()
    return sweep_id, sweep_folder(sweep_id)


@task(name="find_sweep")
def find_sweep(pipeline: SweepPipelineConfig, sweep_id: str) -> SweepState:
    """An existing sweep's setup, from its study; a sweep id the storage does not hold is
    refused (a later round never starts a new sweep under a given id)."""
    state = load_sweep(pipeline.sweep, sweep_id)
    if state is None:
        raise ConfigError(missing_sweep(sweep_id, optuna_storage(pipeline.sweep)))
    warn_other_host(state)
    return state


def warn_other_host(state: SweepState) -> None:
    """Log the warning of other_host_on_sqlite, if any."""
    from tasks.sweep.record import other_host_on_sqlite

    warning = other_host_on_sqlite(state)
    if warning:
        get_run_logger().warning(warning)


def missing_sweep(sweep_id: str, storage: str) -> str:
    """Why a run of sweep `sweep_id` finds nothing, and what to do."""
    from tasks.sweep.record import masked

    message = (
        f"No sweep {sweep_id!r} in the Optuna storage {masked(storage)}: leave sweep_id empty to start a new "
        "sweep, or point sweep.storage (or TUNELOOP_OPTUNA_STORAGE) at the database the sweep started in."
    )
    if storage.startswith("sqlite"):
        message += (
            f" The storage is a SQLite file, which only the host holding it sees ({socket.gethostname()} runs "
            "this): when rounds and trials run on several hosts, give them one Postgres database "
            "(TUNELOOP_OPTUNA_STORAGE=postgresql://...)."
        )
    return message


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
    from tasks.tracking.store import flatten, readable_run_name, run_tags, write_config
    from tasks.tracking.sweep import start_sweep_run

    config: SweepConfig = pipeline.sweep
    storage = optuna_storage(config)
    study = open_study(config, sweep_id, storage)
    parent = start_sweep_run(
        target,
        sweep_id,
        flatten(pipeline.model_dump(mode="json")),
        run_tags(dataset_sha256, {"base_model": selection.chosen.base_model}),
        write_config(pipeline, folder / "config.yaml"),
        pipeline.tracking.run_name or readable_run_name("sweep", pipeline.data.path, selection.chosen.base_model),
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
        budget=Budget(max_rounds=config.max_rounds, max_trials=config.max_trials, max_hours=config.max_hours),
        host=socket.gethostname(),
    )
    save_setup(study, state, pipeline.model_dump(mode="json"))
    get_run_logger().info(folds_line(config, pipeline.train.refit, state))
    return state


@task(name="use_stored_config")
def use_stored_config(pipeline: SweepPipelineConfig, state: SweepState) -> SweepPipelineConfig:
    """A later round (or a trial) runs with the config its sweep started with (see stored_config);
    the log names what this run's parameters wanted differently."""
    from tasks.sweep.record import stored_config
    from tasks.tracking.store import flatten

    stored = stored_config(state, pipeline)
    if stored is None:
        return pipeline
    given, kept = flatten(pipeline.model_dump(mode="json")), flatten(stored.model_dump(mode="json"))
    differ = sorted(key for key in given if key in kept and given[key] != kept[key] and not key.startswith("sweep."))
    if differ:
        get_run_logger().warning(
            "%s runs with the config stored when it started; this run's %s do not apply (start a new sweep "
            "to change them).",
            state.sweep_id,
            ", ".join(differ[:10]),
        )
    return stored


@task(name="open_round")
def open_round(state: SweepState, target: TrackingTarget) -> None:
    """The sweep's MLflow parent run belongs to this round while it runs: RUNNING, and ended KILLED
    or FAILED by this flow run's hooks when the round is cancelled, fails or crashes (so no run of a
    stopped sweep stays RUNNING); a later run that continues the sweep takes it over again."""
    from tasks.tracking.live import drive_run
    from tasks.tracking.store import mlflow_client

    drive_run(target, mlflow_client(target.uri).get_run(state.parent_run_id))


@task(name="ask_trials")
def ask_trials(pipeline: SweepPipelineConfig, state: SweepState, round_number: int) -> tuple[list[int], list[int]]:
    """Ask the study for the round's new trials (parameters suggested and stored, so any process can
    run them); with them, the trials of this round still running from an earlier attempt of it (the
    round waits for their heartbeat to settle them). Returns (new, unfinished) trial numbers."""
    study = sweep_study(state)
    trials = study_trials(study)
    config = escalated(pipeline.sweep, round_number, best_learning_rate(trials))
    this_round = [trial for trial in trials if trial.round == round_number]
    earlier = len(trials) - len(this_round)
    wanted = trials_this_round(pipeline.sweep, state.budget, round_number, earlier) - len(this_round)
    study = open_study(config, state.study_name, state.storage, slot=len(trials))
    asked: list[int] = []
    fresh = 0  # new trials asked (a dead trial's retry, popped first, does not count)
    while fresh < wanted:
        trial = ask(study)  # a dead trial's retry (WAITING) comes first, with its parameters
        if "failed_trial" not in frozen_trial(state.storage, state.study_name, trial.number).system_attrs:
            trial.set_user_attr("round", round_number)
            suggest(trial, config, pipeline.train)
            fresh += 1
        asked.append(trial.number)
    unfinished = [trial.number for trial in this_round if trial.state in ("running", "waiting")]
    if asked:
        get_run_logger().info("Round %d: trials %s asked", round_number, ", ".join(map(str, asked)))
    return asked, unfinished


@task(name="run_trial")
def run_sweep_trial(
    pipeline: SweepPipelineConfig, sweep_id: str, number: int, target: TrackingTarget, gpu: str | None = None
) -> TrialResult:
    """One trial (the trial flow's work): fine-tune the study's trial `number` (on a GPU, holding the
    GPU concurrency limit), its epochs streamed to a live MLflow child run, and record the outcome
    in the study and the run (with `gpu`, the host's GPU it holds, when it was given one)."""
    from tasks.core.errors import ConfigError
    from tasks.model.progress import PENDING_METRICS, metric_stream
    from tasks.tracking.live import MetricSender
    from tasks.tracking.store import flatten
    from tasks.tracking.sweep import log_trial, open_trial_run
    from tasks.tracking.training import pending_metrics

    state = load_sweep(pipeline.sweep, sweep_id)
    if state is None:
        raise ConfigError(missing_sweep(sweep_id, optuna_storage(pipeline.sweep)))
    warn_other_host(state)
    pipeline = use_stored_config.fn(pipeline, state)
    frozen = sweep_study(state).trials[number]
    log = get_run_logger()
    run_id = open_trial_run(target, state.parent_run_id, sweep_id, int(frozen.user_attrs.get("round", 1)), number)
    sender = MetricSender(uri=target.uri, run_id=run_id)
    folder = trial_folder(state, frozen)
    folder.mkdir(parents=True, exist_ok=True)
    stream = metric_stream(
        sender, log, folder, pipeline.tracking.outage_grace_seconds, pipeline.tracking.loss_every_steps
    )
    args = (pipeline.sweep, state, pipeline.train, pipeline.eval, number, pipeline.model.trust_remote_code, log)
    with gpu_slot(pipeline.sweep, on_gpu=trains_on_gpu(pipeline.train)):
        attributes = {"mlflow_run_id": run_id} | ({"gpu": gpu} if gpu is not None else {})
        result = run_trial(*args, callbacks=[stream], attributes=attributes)
    train = pipeline.train.model_copy(update=result.params)
    if result.plan:  # a finished trial: log what it ran with (epochs, learning rate, length)
        train = effective_train(train, TrainingPlan.model_validate(result.plan))
    trial_config = pipeline.model_copy(update={"train": train})
    params = flatten(trial_config.model_dump(mode="json"))
    log_trial(target, run_id, params, result.model_dump(), pipeline.sweep.metric, pending_metrics(folder))
    (folder / PENDING_METRICS).unlink(missing_ok=True)
    return result


@task(name="close_round")
def close_round(
    pipeline: SweepPipelineConfig,
    state: SweepState,
    round_number: int,
    target: TrackingTarget,
) -> tuple[SweepState, RoundDecision]:
    """Record the round in the study, decide what comes next, and show it: MLflow parent metrics
    and pictures, a Prefect table of the round's trials."""
    import optuna
    from prefect.artifacts import create_table_artifact

    from tasks.tracking.store import run_link
    from tasks.tracking.sweep import end_dead_trial_runs, log_round

    config: SweepConfig = pipeline.sweep
    study = sweep_study(state)
    history = study_trials(study)
    trials = [trial for trial in history if trial.round == round_number]
    rows = scored_rows(config, pipeline.train.refit, state)
    decision = decide(config, state, round_number, trials, len(history), rows)
    decision.searched = space_lines(escalated(config, round_number, best_learning_rate(history)))
    summary = {"trials": [trial.number for trial in trials], "decision": decision.action, "best": decision.best_score}
    close_round_record(study, round_number, summary)
    dead = [
        trial.user_attrs["mlflow_run_id"]
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if trial.user_attrs.get("round") == round_number and "mlflow_run_id" in trial.user_attrs
    ]
    end_dead_trial_runs(target, dead)
    folder = Path(state.folder)
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
    candidate: BestModel | None = None,
) -> SweepResult:
    """The sweep's result (with its `candidate`, when it is over); when it is over, close the MLflow
    parent run with the outcome."""
    from tasks.tracking.sweep import finish_sweep_run

    study = sweep_study(state)
    trials = study_trials(study)
    top = best_of(trials)
    outcome = "next_round_queued" if queued else decision.action
    if outcome in ("target_met", "budget_spent"):
        finish_sweep_run(target, state.parent_run_id, outcome, decision.message)
    return SweepResult(
        sweep_id=state.sweep_id,
        outcome=outcome,
        message=decision.message,
        rounds=len(closed_rounds(study)),
        trials=len(trials),
        pruned=sum(trial.state == "pruned" for trial in trials),
        best_score=top.score if top else None,
        best_trial=top.number if top else None,
        best_model_path=candidate.model_path if candidate else (top.model_path if top else None),
        best_test=candidate.evaluation.test.model_dump(exclude={"per_class"}) if candidate else None,
        refit=candidate.refit if candidate else None,
        parent_run_id=state.parent_run_id,
        next_round=queued,
        promotion=promotion,
        family=candidate.family if candidate else None,
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
    """The sweep's candidate: the best trial's model, or its configuration refit on train + validation
    (tasks/sweep/candidate.py), scored on test (trials only saw validation) and on validation by the
    trial's held-out predictions; the scores, the evaluation files, the refit and the model go to the
    trial's MLflow run. None without a completed trial."""
    from tasks.model.evaluate import evaluate_model
    from tasks.sweep.candidate import candidate_decision, refit_candidate
    from tasks.tracking.model import example_text
    from tasks.tracking.sweep import log_final_model

    best = best_of(sweep_trials(state))
    if best is None or best.mlflow_run_id is None:
        return None
    decision = candidate_decision(pipeline, state, best)
    log = get_run_logger()
    if decision.refit:
        model, decision = refit_candidate(pipeline, state, best, decision, log)
    elif best.model_path is None:
        return None
    else:
        model = Path(best.model_path)
    log.info("Candidate: trial %d. %s", best.number, decision.sentence())
    report = evaluate_model.fn(
        str(model),
        state.splits.validation.path,
        state.splits.test.path,
        pipeline.eval,
        model.parent / "evaluation",
        best.predictions,
    )
    model_path = str(model) if pipeline.tracking.log_model else None
    example = example_text(state.splits.validation) if model_path else ""
    model_id = log_final_model(target, best.mlflow_run_id, report, model_path, example, decision)
    return BestModel(
        trial=best,
        evaluation=report,
        model_path=str(model),
        refit=decision,
        run_id=best.mlflow_run_id,
        model_id=model_id,
    )
