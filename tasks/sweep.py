"""Hyperparameter sweeps in rounds: Optuna (seeded TPE, persistent study named by the sweep id, so
every round warm-starts from all earlier trials) proposes trial configs; each trial is the same
fine-tune and evaluate code as the train flow, pruned early on per-epoch validation F1; after a
round the best score meets the target, or the next round is queued, or the budget ends it."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.evaluate import EvalReport
from tasks.registry import PromotionResult
from tasks.resolve import ModelRef
from tasks.select import SelectionReport
from tasks.split import SplitReport
from tasks.workspace import tuneloop_home

SearchedParameter = Literal[
    "learning_rate",
    "epochs",
    "batch_size",
    "weight_decay",
    "warmup_ratio",
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
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed of the sampler.")
    startup_trials: int = Field(
        4,
        ge=1,
        le=1000,
        description="Random trials before TPE starts modelling the "
        "space (Optuna's default of 10 would make small sweeps purely random).",
    )
    search: list[SearchedParameter] = Field(
        default=["learning_rate", "epochs", "weight_decay", "warmup_ratio"],
        min_length=1,
        description="Which hyperparameters to search; the others keep the train section's values.",
    )
    learning_rate_min: float = Field(1e-5, gt=0, le=1, description="Lower bound of the learning rate (log scale).")
    learning_rate_max: float = Field(1e-3, gt=0, le=1, description="Upper bound of the learning rate (log scale).")
    epochs_min: int = Field(1, ge=1, le=100, description="Fewest epochs a trial trains.")
    epochs_max: int = Field(4, ge=1, le=100, description="Most epochs a trial trains.")
    batch_sizes: list[int] = Field(default=[16, 32], min_length=1, description="Batch sizes to try.")
    weight_decay_max: float = Field(0.1, ge=0, le=1, description="Upper bound of the weight decay.")
    warmup_ratio_max: float = Field(0.2, ge=0, lt=1, description="Upper bound of the warmup share.")
    lora_ranks: list[int] = Field(default=[4, 8, 16, 32], min_length=1, description="LoRA ranks.")
    lora_alphas: list[int] = Field(default=[8, 16, 32, 64], min_length=1, description="LoRA alphas.")
    lora_dropout_max: float = Field(0.3, ge=0, lt=1, description="Upper bound of the LoRA dropout.")
    methods: list[Literal["full", "lora"]] = Field(
        default=["full", "lora"], min_length=1, description="Methods to try when `method` is searched."
    )
    escalation: list[Escalation] = Field(
        default=["more_trials", "more_epochs"],
        description=(
            "What each new round changes: more_trials (x1.5), more_epochs (+1 to epochs_max), widen (learning-rate "
            "range x/÷3), full_finetune (LoRA to full), next_candidate (the next base model in the "
            "selection's ranking)."
        ),
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SweepConfig:
        if self.learning_rate_min > self.learning_rate_max or self.epochs_min > self.epochs_max:
            raise ValueError("sweep ranges need min <= max (learning_rate_min/max, epochs_min/max)")
        return self


class TrialResult(BaseModel):
    """One trial: its parameters, per-epoch scores, final score and state."""

    number: int
    round: int
    params: dict[str, Any]
    state: Literal["complete", "pruned", "failed"]
    score: float | None
    history: list[dict[str, Any]]
    model_path: str | None
    seconds: float
    mlflow_run_id: str | None = None
    error: str | None = None


class SweepState(BaseModel):
    """What every round of one sweep shares, kept on disk in the sweep's folder."""

    sweep_id: str
    folder: str
    started_at: datetime
    study_name: str
    storage: str
    splits: SplitReport
    model: ModelRef
    candidates: list[ModelRef] = Field(default_factory=list)
    parent_run_id: str
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    claims: dict[str, str] = Field(default_factory=dict, description="Round number -> the flow run that runs it.")

    @property
    def trial_count(self) -> int:
        """Trials run in the finished rounds."""
        return sum(len(entry["trials"]) for entry in self.rounds)


class RoundDecision(BaseModel):
    """What happens after a round."""

    action: Literal["target_met", "next_round", "budget_spent", "already_claimed"]
    message: str
    best_score: float | None
    best_trial: int | None


def optuna_storage(config: SweepConfig) -> str:
    """The configured storage, else TUNELOOP_OPTUNA_STORAGE (where a password may live, out of
    the form), else a SQLite file in the home folder."""
    return config.storage or os.environ.get("TUNELOOP_OPTUNA_STORAGE") or f"sqlite:///{tuneloop_home() / 'optuna.db'}"


def new_sweep_id() -> str:
    """A readable, unique sweep id."""
    return f"sweep-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def sweep_folder(sweep_id: str) -> Path:
    """The sweep's folder under the home folder (created)."""
    folder = tuneloop_home() / "sweeps" / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_state(state: SweepState) -> None:
    """Write the sweep's state file."""
    (Path(state.folder) / "state.json").write_text(state.model_dump_json(indent=2), encoding="utf-8")


def load_state(sweep_id: str) -> SweepState | None:
    """The sweep's state, or None for a new sweep."""
    path = tuneloop_home() / "sweeps" / sweep_id / "state.json"
    return SweepState.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def escalated(config: SweepConfig, round_number: int, best_learning_rate: float | None = None) -> SweepConfig:
    """The sweep config of round `round_number` (1 = as configured), after the escalation policy.
    `widen` centres the learning-rate range on the best trial so far (when one searched it) and
    widens it by 3x each way per round; without a best trial it widens the configured range."""
    steps = round_number - 1
    update: dict[str, Any] = {}
    if "more_trials" in config.escalation:
        update["trials_per_round"] = max(1, round(config.trials_per_round * 1.5**steps))
    if "more_epochs" in config.escalation:
        update["epochs_max"] = config.epochs_max + steps
    if "widen" in config.escalation and steps:
        low, high = (
            (best_learning_rate, best_learning_rate)
            if best_learning_rate
            else (config.learning_rate_min, config.learning_rate_max)
        )
        update["learning_rate_min"] = max(1e-7, low / 3**steps)
        update["learning_rate_max"] = min(1.0, high * 3**steps)
    if "full_finetune" in config.escalation and steps:
        update["methods"] = ["full"]
    return config.model_copy(update=update)


def open_study(config: SweepConfig, study_name: str, storage: str, slot: int = 0) -> Any:
    """The persistent Optuna study (created on first use), with the pruner and a sampler seeded by
    `sweep.seed + slot`: each trial opens the study anew, so each needs its own slot to differ."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = config.seed + slot
    sampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.startup_trials, constant_liar=True)
        if config.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner(),
        "none": optuna.pruners.NopPruner(),
    }[config.pruner]
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def suggest(trial: Any, config: SweepConfig, train: Any) -> dict[str, Any]:
    """The searched hyperparameters of one trial; the others come from the train section."""
    searched = set(config.search)
    params: dict[str, Any] = {}
    if "method" in searched:
        params["method"] = trial.suggest_categorical("method", config.methods)
    if "learning_rate" in searched:
        params["learning_rate"] = trial.suggest_float(
            "learning_rate", config.learning_rate_min, config.learning_rate_max, log=True
        )
    if "epochs" in searched:
        params["epochs"] = trial.suggest_int("epochs", config.epochs_min, config.epochs_max)
    if "batch_size" in searched:
        params["batch_size"] = trial.suggest_categorical("batch_size", config.batch_sizes)
    if "weight_decay" in searched:
        params["weight_decay"] = trial.suggest_float("weight_decay", 0.0, config.weight_decay_max)
    if "warmup_ratio" in searched:
        params["warmup_ratio"] = trial.suggest_float("warmup_ratio", 0.0, config.warmup_ratio_max)
    if params.get("method", train.method) == "lora":
        if "lora_r" in searched:
            params["lora_r"] = trial.suggest_categorical("lora_r", config.lora_ranks)
        if "lora_alpha" in searched:
            params["lora_alpha"] = trial.suggest_categorical("lora_alpha", config.lora_alphas)
        if "lora_dropout" in searched:
            params["lora_dropout"] = trial.suggest_float("lora_dropout", 0.0, config.lora_dropout_max)
    return params


def pruning_callback(trial: Any, metric: str) -> Any:
    """Report each epoch's validation score to Optuna and stop the Trainer when the pruner says so."""
    import optuna
    from transformers import TrainerCallback

    from tasks.finetune import eval_scores

    class ReportToOptuna(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []  # kept here too: a pruned trial's Trainer never returns

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **_: Any) -> None:
            score = (metrics or {}).get(f"eval_{metric}")
            if score is None:
                return
            self.history.append({"epoch": round(state.epoch or 0), "val": eval_scores(metrics or {})})
            trial.report(float(score), step=round(state.epoch or 0))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {round(state.epoch or 0)}: {metric} {score:.4f}")

    return ReportToOptuna()


def model_for_round(config: SweepConfig, state: SweepState, round_number: int) -> ModelRef:
    """The base model a round fine-tunes: the chosen one, or with `next_candidate` escalation the
    round's place in the selection ranking (staying on the last one)."""
    if "next_candidate" not in config.escalation or not state.candidates:
        return state.model
    return state.candidates[min(round_number - 1, len(state.candidates) - 1)]


def trial_history(callback_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch records in the shape the tracking module logs."""
    return [{"epoch": entry["epoch"], "train_loss": None, "val": entry["val"]} for entry in callback_history]


def run_trial(
    config: SweepConfig,
    state: SweepState,
    train: Any,
    evaluation: Any,
    round_number: int,
    slot: int,
    trust_remote_code: bool,
    log: Any,
) -> TrialResult:
    """Ask the study for one configuration, fine-tune it with pruning, tell the study the result.
    `slot` (unique within the sweep) seeds the sampler."""
    import shutil

    import optuna

    from tasks.finetune import finetune

    study = open_study(config, state.study_name, state.storage, slot)
    trial = study.ask()
    trial.set_user_attr("round", round_number)
    params = suggest(trial, config, train)
    folder = Path(state.folder) / f"trial-{trial.number:03d}"
    reporter = pruning_callback(trial, config.metric)
    started = time.perf_counter()
    result = TrialResult(
        number=trial.number,
        round=round_number,
        params=params,
        state="complete",
        score=None,
        history=[],
        model_path=None,
        seconds=0.0,
    )
    try:
        trained = finetune(
            state.splits,
            model_for_round(config, state, round_number),
            train.model_copy(update=params),
            evaluation.model_copy(update={"metric": config.metric}),
            folder,
            trust_remote_code,
            log=log,
            callbacks=[reporter],
        )
        result.history = [record.model_dump() for record in trained.history]
        result.score = max(record.val[config.metric] for record in trained.history)
        result.model_path = trained.path
        study.tell(trial, result.score)
    except optuna.TrialPruned as pruned:
        result.state, result.history = "pruned", trial_history(reporter.history)
        result.score = max((entry["val"][config.metric] for entry in reporter.history), default=None)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        log.info("Trial %d %s", trial.number, pruned)
    except Exception as error:  # a failed trial must not end the sweep; it is recorded and reported
        result.state, result.error = "failed", f"{type(error).__name__}: {error}"[:500]
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, result.error)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the saved model is all a trial keeps
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def best_of(trials: list[TrialResult]) -> TrialResult | None:
    """The completed trial with the highest score."""
    scored = [trial for trial in trials if trial.state == "complete" and trial.score is not None]
    return max(scored, key=lambda trial: trial.score or 0.0, default=None)


def best_trial(state: SweepState) -> TrialResult | None:
    """The best finished trial over every round so far."""
    return best_of(all_trials(state))


def best_learning_rate(state: SweepState) -> float | None:
    """The learning rate of the best finished trial so far, when the sweep searched it."""
    best = best_trial(state)
    return best.params.get("learning_rate") if best else None


def trials_this_round(config: SweepConfig, round_number: int, trials_so_far: int) -> int:
    """How many trials the round runs: the escalated count, within the trial budget."""
    return max(0, min(escalated(config, round_number).trials_per_round, config.max_trials - trials_so_far))


def spent_budget(config: SweepConfig, state: SweepState, round_number: int) -> list[str]:
    """The budget limits that round `round_number`, starting now, would break."""
    hours = (datetime.now(UTC) - state.started_at).total_seconds() / 3600
    limits = (
        ("max_rounds", round_number > config.max_rounds),
        ("max_trials", state.trial_count >= config.max_trials),
        ("max_hours", hours >= config.max_hours),
    )
    return [name for name, over in limits if over]


def decide(config: SweepConfig, state: SweepState, round_number: int, trials: list[TrialResult]) -> RoundDecision:
    """Target met, next round, or budget spent: never loop without bound."""
    best = best_of(trials)
    best_score = best.score if best else None
    shown = f"{best_score:.4f}" if best_score is not None else "none"
    if best_score is not None and best_score >= config.target_f1:
        return RoundDecision(
            action="target_met",
            best_score=best_score,
            best_trial=best.number if best else None,
            message=f"Target reached in round {round_number}: best {config.metric} {shown} >= "
            f"{config.target_f1} (trial {best.number if best else '?'}).",
        )
    spent = spent_budget(config, state, round_number + 1)
    if spent:
        return RoundDecision(
            action="budget_spent",
            best_score=best_score,
            best_trial=best.number if best else None,
            message=f"Target not reached after {round_number} round(s) (best {config.metric} {shown} "
            f"< target {config.target_f1}); budget spent: {', '.join(spent)}.",
        )
    return RoundDecision(
        action="next_round",
        best_score=best_score,
        best_trial=best.number if best else None,
        message=f"Round {round_number} best {config.metric} {shown} < target {config.target_f1}: "
        f"queuing round {round_number + 1}.",
    )


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


class QueuedRound(BaseModel):
    """How the next round was handed on (see tasks/requeue.py)."""

    round: int
    by: Literal["run_deployment", "trigger"]
    flow_run_id: str | None = None


def all_trials(state: SweepState) -> list[TrialResult]:
    """Every trial of every finished round."""
    return [TrialResult.model_validate(trial) for entry in state.rounds for trial in entry["trials"]]


def plot_trials(trials: list[TrialResult], metric: str, target: float, path: Path) -> Path:
    """Validation score by trial, coloured by round; pruned trials as crosses; the target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    rounds = sorted({trial.round for trial in trials})
    colours = plt.get_cmap("viridis")([index / max(len(rounds) - 1, 1) for index in range(len(rounds))])
    for colour, round_number in zip(colours, rounds, strict=True):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [(t.number, t.score) for t in trials if t.round == round_number and t.state == state and t.score]
            if points:
                axes.scatter(
                    *zip(*points, strict=True),
                    color=colour,
                    marker=marker,
                    label=f"round {round_number}" + (" (pruned)" if state == "pruned" else ""),
                )
    axes.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target}")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title("Sweep history")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_importances(study: Any, path: Path) -> Path | None:
    """Optuna's parameter importances as a bar chart (needs a few finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return None
    if not importances:
        return None
    figure, axes = plt.subplots(figsize=(6, 0.5 * len(importances) + 1.5))
    names = list(importances)[::-1]
    axes.barh(names, [importances[name] for name in names], color="tab:blue")
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("Hyperparameter importance")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


@task(name="begin_sweep")
def begin_sweep(sweep_id: str | None) -> tuple[str, Path, SweepState | None]:
    """The sweep's id and folder, and its saved state when this is a later round of an existing sweep."""
    sweep_id = sweep_id or new_sweep_id()
    return sweep_id, sweep_folder(sweep_id), load_state(sweep_id)


@task(name="start_sweep")
def start_sweep(
    pipeline: BaseModel, sweep_id: str, folder: Path, splits: SplitReport, selection: SelectionReport, target: Any
) -> SweepState:
    """Create the Optuna study and the MLflow parent run once, before any trial (NOTES: never let
    parallel trials create the databases)."""
    from tasks.track import flatten, run_tags, start_sweep_run

    config: SweepConfig = pipeline.sweep  # type: ignore[attr-defined]
    storage = optuna_storage(config)
    open_study(config, sweep_id, storage)
    parent = start_sweep_run(
        target,
        sweep_id,
        flatten(pipeline.model_dump(mode="json")),
        run_tags(splits.train.sha256, {"base_model": selection.chosen.base_model}),
    )
    state = SweepState(
        sweep_id=sweep_id,
        folder=str(folder),
        started_at=datetime.now(UTC),
        study_name=sweep_id,
        storage=storage,
        splits=splits,
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
    import torch

    from tasks.track import flatten, log_trial

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
    if config.gpu_concurrency_limit and torch.cuda.is_available():
        from prefect.concurrency.sync import concurrency

        with concurrency(config.gpu_concurrency_limit, occupy=1, strict=True):
            result = run_trial(*args)
    else:
        result = run_trial(*args)
    trial_config = pipeline.model_copy(update={"train": pipeline.train.model_copy(update=result.params)})  # type: ignore[attr-defined]
    result.mlflow_run_id = log_trial(
        target,
        state.parent_run_id,
        state.sweep_id,
        flatten(trial_config.model_dump(mode="json")),
        result.model_dump(),
        config.metric,
    )
    return result


def round_table(trials: list[TrialResult]) -> list[dict[str, Any]]:
    """One row per trial for the round's Prefect table artifact."""
    return [
        {
            "trial": trial.number,
            "round": trial.round,
            "state": trial.state,
            "score": None if trial.score is None else round(trial.score, 4),
            "epochs run": len(trial.history),
            "seconds": trial.seconds,
            **{key: value for key, value in trial.params.items()},
        }
        for trial in trials
    ]


@task(name="close_round")
def close_round(
    pipeline: BaseModel, state: SweepState, round_number: int, trials: list[TrialResult], target: Any
) -> tuple[SweepState, RoundDecision]:
    """Record the round, decide what comes next, and show it: MLflow parent metrics and pictures,
    a Prefect table of the round's trials."""
    from prefect.artifacts import create_table_artifact

    from tasks.track import log_round, run_link

    config: SweepConfig = pipeline.sweep  # type: ignore[attr-defined]
    state.rounds.append({"round": round_number, "trials": [trial.model_dump() for trial in trials]})
    save_state(state)
    decision = decide(config, state, round_number, trials)
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
            f"{state.sweep_id} round {round_number}: {decision.message} MLflow parent run: "
            f"{run_link(target, state.parent_run_id)}"
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
    from tasks.track import finish_sweep_run

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
    )


def trial_batches(first_slot: int, count: int, concurrent: int) -> list[tuple[int, int]]:
    """(first slot, size) of the batches a round's `count` trials run in, at most `concurrent` at once."""
    return [(first_slot + start, min(concurrent, count - start)) for start in range(0, count, concurrent)]


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
    from tasks.track import log_final_model

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
