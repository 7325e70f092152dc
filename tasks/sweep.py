"""Hyperparameter sweeps in rounds: Optuna (seeded TPE, persistent study named by the sweep id, so
every round warm-starts from all earlier trials) proposes trial configs; each trial is the same
fine-tune and evaluate code as the train flow, pruned early on per-epoch validation F1; after a
round the best score meets the target, or the next round is queued, or the budget ends it.

This module holds the step's config and its Prefect tasks; the Optuna side (and what one trial
does) lives in tasks/search.py, the rounds' state and decisions in tasks/rounds.py, and the
sweep's MLflow runs in tasks/sweep_tracking.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import ConfigError
from tasks.evaluate import EvalReport
from tasks.finetune import TrainingPlan, effective_train
from tasks.registry import PromotionResult
from tasks.rounds import (
    QueuedRound,
    RoundDecision,
    SweepState,
    all_trials,
    best_learning_rate,
    best_trial,
    decide,
    load_state,
    new_sweep_id,
    plot_trials,
    round_table,
    save_state,
    sweep_folder,
)
from tasks.search import (
    TrialResult,
    escalated,
    gpu_limit_problem,
    gpu_slot,
    held_fixed,
    open_study,
    optuna_storage,
    plot_importances,
    run_trial,
    space_lines,
    trains_on_gpu,
)
from tasks.select import SelectionReport
from tasks.split import SplitReport

SearchedParameter = Literal[
    "learning_rate",
    "epochs",
    "batch_size",
    "weight_decay",
    "warmup_epochs",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "method",
]
Escalation = Literal["more_trials", "more_epochs", "widen", "full_finetune", "next_candidate"]


class SweepConfig(BaseModel):
    """The search space, the target, the budget, and how each new round escalates."""

    model_config = ConfigDict(extra="forbid")

    target_f1: float = Field(0.9, ge=0, le=1, description="Stop when a trial's validation score reaches this.")
    metric: Literal["f1_macro", "f1_weighted"] = Field(
        "f1_macro", description="Validation score the sweep optimises and compares with target_f1."
    )
    trials_per_round: int = Field(4, ge=1, le=200, description="Trials Optuna proposes per round.")
    max_rounds: int = Field(3, ge=1, le=100, description="Most rounds, the first included.")
    max_trials: int = Field(24, ge=1, le=10_000, description="Most trials over all rounds.")
    max_hours: float = Field(
        12.0, gt=0, le=720, description="Most hours from the sweep's start; no round starts after that."
    )
    max_concurrent_trials: int = Field(
        1, ge=1, le=64, description="Trials run at the same time (threads here; flow runs on workers in a cluster)."
    )
    requeue: Literal["run_deployment", "trigger"] = Field(
        "run_deployment",
        description="Run from a deployment, how the next round is queued: by this flow run (run_deployment, "
        "idempotent per round), or by the deployment's trigger on the event tuneloop.sweep.below-threshold "
        "(trigger). Local runs continue in the same process either way.",
    )
    gpu_concurrency_limit: str | None = Field(
        None,
        description="Name of a Prefect global concurrency limit that "
        "each trial on a GPU occupies (strict: it must exist); unset: none.",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage URL (any SQLAlchemy URL); unset: the environment's TUNELOOP_OPTUNA_STORAGE, "
        "else sqlite:///<TUNELOOP_HOME>/optuna.db.",
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler (seeded).")
    pruner: Literal["median", "successive_halving", "none"] = Field(
        "median", description="Stops hopeless trials on their per-epoch validation score."
    )
    pruning_min_epochs: int = Field(
        1,
        ge=1,
        le=100,
        description="The earliest epoch at which the pruner may stop a trial; raise it when good "
        "configurations start slowly (little data, low learning rates, warmup).",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed of the sampler.")
    startup_trials: int = Field(
        4,
        ge=1,
        le=1000,
        description="Random trials before TPE starts modelling the "
        "space (Optuna's default of 10 would make small sweeps purely random).",
    )
    search: list[SearchedParameter] = Field(
        default=["learning_rate", "weight_decay", "warmup_epochs"],
        min_length=1,
        description="Which hyperparameters to search; the others keep the train section's values.",
    )
    learning_rate_min: float = Field(1e-5, gt=0, le=1, description="Lower bound of the learning rate (log scale).")
    learning_rate_max: float = Field(1e-3, gt=0, le=1, description="Upper bound of the learning rate (log scale).")
    epochs_min: int = Field(1, ge=1, le=100, description="Fewest epochs a trial trains.")
    epochs_max: int = Field(4, ge=1, le=100, description="Most epochs a trial trains.")
    batch_sizes: list[int] = Field(default=[16, 32], min_length=1, description="Batch sizes to try.")
    weight_decay_max: float = Field(0.1, ge=0, le=1, description="Upper bound of the weight decay.")
    warmup_epochs_max: float = Field(1.0, ge=0, le=100, description="Upper bound of the warmup, in epochs.")
    lora_ranks: list[int] = Field(default=[4, 8, 16, 32], min_length=1, description="LoRA ranks.")
    lora_alphas: list[int] = Field(default=[8, 16, 32, 64], min_length=1, description="LoRA alphas.")
    lora_dropout_max: float = Field(0.3, ge=0, lt=1, description="Upper bound of the LoRA dropout.")
    methods: list[Literal["full", "lora"]] = Field(
        default=["full", "lora"], min_length=1, description="Methods to try when `method` is searched."
    )
    escalation: list[Escalation] = Field(
        default=["more_trials", "widen"],
        description=(
            "What each new round changes: more_trials (x1.5), more_epochs (+1 to epochs_max, when epochs is "
            "searched), widen (learning-rate range x/÷3 around the best trial), full_finetune (LoRA to full), "
            "next_candidate (the next base model in the selection's ranking)."
        ),
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SweepConfig:
        if self.learning_rate_min > self.learning_rate_max or self.epochs_min > self.epochs_max:
            raise ValueError("sweep ranges need min <= max (learning_rate_min/max, epochs_min/max)")
        return self


DEFAULT_SEARCH = SweepConfig.model_fields["search"].default


def search_space(config: SweepConfig, train: BaseModel) -> tuple[list[str], dict[str, Any]]:
    """What the sweep searches and what it keeps: a searched hyperparameter that the train section
    sets (to other than its default) is the user's choice and is not searched. Listing it in an
    explicit sweep.search as well is a contradiction, refused with what to change."""
    fixed = held_fixed(train, config.search)
    named = ", ".join(f"train.{name}={value}" for name, value in fixed.items())
    if fixed and config.search != DEFAULT_SEARCH:
        raise ConfigError(
            f"sweep.search={config.search} searches {', '.join(fixed)}, which the config also sets ({named}). "
            f"Remove {', '.join(fixed)} from sweep.search to keep your value, or unset it in the train section "
            "to search it."
        )
    searched = [name for name in config.search if name not in fixed]
    if not searched:
        raise ConfigError(
            f"Nothing left to search: the config sets every parameter of sweep.search ({named}). "
            "Add parameters to sweep.search, or unset some of them in the train section."
        )
    return searched, fixed


@task(name="plan_search_space")
def plan_search_space(pipeline: BaseModel) -> BaseModel:
    """The sweep's config with only the hyperparameters it will search in sweep.search; the ones
    the train section sets are kept as set (logged)."""
    config: SweepConfig = pipeline.sweep  # type: ignore[attr-defined]
    searched, fixed = search_space(config, pipeline.train)  # type: ignore[attr-defined]
    log = get_run_logger()
    log.info("Searching %s", "; ".join(space_lines(config, searched)))
    if fixed:
        log.info("Held fixed (set in the train section): %s", ", ".join(f"{k}={v}" for k, v in fixed.items()))
    return pipeline.model_copy(update={"sweep": config.model_copy(update={"search": searched})})


class SweepResult(BaseModel):
    """How a sweep (or this round of it) ended."""

    sweep_id: str
    outcome: Literal["target_met", "budget_spent", "next_round_queued", "already_claimed"]
    message: str
    rounds: int
    trials: int
    pruned: int
    best_score: float | None
    best_trial: int | None
    best_model_path: str | None
    parent_run_id: str
    next_round: QueuedRound | None = None
    promotion: PromotionResult | None = None
    searched: list[str] = Field(default_factory=list, description="The searched space of the last round, in words.")


@task(name="check_trial_device")
def check_trial_device(pipeline: BaseModel) -> None:
    """Before any data work: the trials' device and precision exist on this machine (else every trial
    would fail), and on a GPU the configured concurrency limit exists (trials occupy it strictly)."""
    name = pipeline.sweep.gpu_concurrency_limit  # type: ignore[attr-defined]
    if trains_on_gpu(pipeline.train) and name:  # type: ignore[attr-defined]
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
    pipeline: BaseModel,
    sweep_id: str,
    folder: Path,
    dataset_sha256: str,
    splits: SplitReport,
    selection: SelectionReport,
    target: Any,
) -> SweepState:
    """Create the Optuna study and the MLflow parent run once, before any trial (NOTES: never let
    parallel trials create the databases)."""
    from tasks.sweep_tracking import start_sweep_run
    from tasks.track import flatten, run_tags

    config: SweepConfig = pipeline.sweep  # type: ignore[attr-defined]
    storage = optuna_storage(config)
    open_study(config, sweep_id, storage)
    parent = start_sweep_run(
        target,
        sweep_id,
        flatten(pipeline.model_dump(mode="json")),
        run_tags(dataset_sha256, {"base_model": selection.chosen.base_model}),
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
def run_sweep_trial(pipeline: BaseModel, state: SweepState, round_number: int, slot: int, target: Any) -> TrialResult:
    """One trial: fine-tune a proposed configuration (on a GPU, holding the GPU concurrency limit).
    `slot` numbers the trial within the sweep; it seeds the sampler."""
    from tasks.sweep_tracking import log_trial
    from tasks.track import flatten

    config = escalated(pipeline.sweep, round_number, best_learning_rate(state))  # type: ignore[attr-defined]
    args = (
        config,
        state,
        pipeline.train,
        pipeline.eval,
        round_number,  # type: ignore[attr-defined]
        slot,
        pipeline.model.trust_remote_code,
        get_run_logger(),
    )  # type: ignore[attr-defined]
    with gpu_slot(config, on_gpu=trains_on_gpu(pipeline.train)):  # type: ignore[attr-defined]
        result = run_trial(*args)
    train = pipeline.train.model_copy(update=result.params)  # type: ignore[attr-defined]
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
    pipeline: BaseModel, state: SweepState, round_number: int, trials: list[TrialResult], target: Any
) -> tuple[SweepState, RoundDecision]:
    """Record the round, decide what comes next, and show it: MLflow parent metrics and pictures,
    a Prefect table of the round's trials."""
    from prefect.artifacts import create_table_artifact

    from tasks.sweep_tracking import log_round
    from tasks.track import run_link

    config: SweepConfig = pipeline.sweep  # type: ignore[attr-defined]
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
    target: Any,
    queued: QueuedRound | None = None,
    promotion: PromotionResult | None = None,
) -> SweepResult:
    """The sweep's result; when it is over, close the MLflow parent run with the outcome."""
    from tasks.sweep_tracking import finish_sweep_run

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


class BestModel(BaseModel):
    """The sweep's best trial, scored on the test split and logged with its model."""

    trial: TrialResult
    evaluation: EvalReport
    run_id: str


@task(name="evaluate_best_trial")
def evaluate_best_trial(pipeline: BaseModel, state: SweepState, target: Any) -> BestModel | None:
    """Score the best trial's saved model on validation and test (trials only saw validation), and
    add the scores, the evaluation files and the model to its MLflow run. None without a completed trial."""
    from tasks.evaluate import evaluate_model
    from tasks.sweep_tracking import log_final_model

    best = best_trial(state)
    if best is None or best.model_path is None or best.mlflow_run_id is None:
        return None
    folder = Path(best.model_path).parent / "evaluation"
    report = evaluate_model.fn(
        best.model_path,
        state.splits.validation.path,
        state.splits.test.path,
        pipeline.eval,
        folder,  # type: ignore[attr-defined]
    )
    log_final_model(target, best.mlflow_run_id, report, best.model_path)
    return BestModel(trial=best, evaluation=report, run_id=best.mlflow_run_id)
