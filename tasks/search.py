"""The search inside a sweep: the persistent, seeded Optuna study, what each trial tries (the
search space after the round's escalation), and one trial: the train flow's fine-tune with
per-epoch pruning on the validation score."""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tasks.resolve import ModelRef
from tasks.workspace import tuneloop_home

if TYPE_CHECKING:
    from tasks.rounds import SweepState
    from tasks.sweep import SweepConfig


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
    started_at: float | None = Field(None, description="When the trial started training (Unix seconds).")
    mlflow_run_id: str | None = None
    error: str | None = None
    plan: dict[str, Any] | None = Field(None, description="The training plan of a trial that finished.")


def optuna_storage(config: SweepConfig) -> str:
    """The configured storage, else TUNELOOP_OPTUNA_STORAGE (where a password may live, out of
    the form), else a SQLite file in the home folder."""
    return config.storage or os.environ.get("TUNELOOP_OPTUNA_STORAGE") or f"sqlite:///{tuneloop_home() / 'optuna.db'}"


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


def gpu_limit_problem(name: str) -> str | None:
    """Why the Prefect global concurrency limit `name` cannot hold trials (missing or inactive), or None."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    fix = f"create it (`prefect gcl create {name} --limit 1`: one trial per GPU) or unset sweep.gpu_concurrency_limit"
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return f"sweep.gpu_concurrency_limit={name!r}: the Prefect server has no such concurrency limit; {fix}."
    if not limit.active:
        return f"sweep.gpu_concurrency_limit={name!r} is inactive, so it limits nothing; activate it or {fix}."
    return None


def trains_on_gpu(train: Any) -> bool:
    """Whether trials with this train section run on a CUDA GPU (train.device, or auto on a GPU machine)."""
    from tasks.finetune import choose_device

    return choose_device(train)[0] == "cuda"


def gpu_slot(config: SweepConfig, on_gpu: bool) -> AbstractContextManager:
    """What a trial holds while it trains: on a GPU, one slot of the configured Prefect global
    concurrency limit (strict: a missing limit is an error, not a free pass); otherwise nothing."""
    if config.gpu_concurrency_limit and on_gpu:
        from prefect.concurrency.sync import concurrency

        return concurrency(config.gpu_concurrency_limit, occupy=1, strict=True)
    return nullcontext()


def open_study(config: SweepConfig, study_name: str, storage: str, slot: int = 0) -> Any:
    """The persistent Optuna study (created on first use), with the pruner and a sampler seeded by
    `sweep.seed` and the trial's slot: each trial opens the study anew, so each needs its own seed.
    The two are mixed (not added), so sweeps with neighbouring seeds do not draw the same trials."""
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int(np.random.SeedSequence([config.seed, slot]).generate_state(1)[0])
    sampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.startup_trials, constant_liar=True)
        if config.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=config.pruning_min_epochs),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner(min_resource=config.pruning_min_epochs),
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
    if "warmup_epochs" in searched:
        params["warmup_epochs"] = trial.suggest_float("warmup_epochs", 0.0, config.warmup_epochs_max)
    if params.get("method", train.method) == "lora":
        if "lora_r" in searched:
            params["lora_r"] = trial.suggest_categorical("lora_r", config.lora_ranks)
        if "lora_alpha" in searched:
            params["lora_alpha"] = trial.suggest_categorical("lora_alpha", config.lora_alphas)
        if "lora_dropout" in searched:
            params["lora_dropout"] = trial.suggest_float("lora_dropout", 0.0, config.lora_dropout_max)
    return params


def held_fixed(train: Any, search: list[str]) -> dict[str, Any]:
    """The searched hyperparameters that the train section sets to other than their defaults. A
    deployment's form sends every field, so "set" has to mean "differs from the default"."""
    defaults = type(train)()
    return {name: getattr(train, name) for name in search if getattr(train, name) != getattr(defaults, name)}


def space_lines(config: SweepConfig, searched: list[str] | None = None) -> list[str]:
    """The searched space in words, one parameter each: `learning_rate 1e-05..0.001 (log)`."""
    ranges = {
        "learning_rate": f"{config.learning_rate_min:.1e}..{config.learning_rate_max:.1e} (log)",
        "epochs": f"{config.epochs_min}..{config.epochs_max}",
        "batch_size": f"one of {config.batch_sizes}",
        "weight_decay": f"0..{config.weight_decay_max:g}",
        "warmup_epochs": f"0..{config.warmup_epochs_max:g}",
        "lora_r": f"one of {config.lora_ranks} (LoRA trials)",
        "lora_alpha": f"one of {config.lora_alphas} (LoRA trials)",
        "lora_dropout": f"0..{config.lora_dropout_max:g} (LoRA trials)",
        "method": f"one of {config.methods}",
    }
    return [f"{name} {ranges[name]}" for name in (searched if searched is not None else config.search)]


def pruning_callback(trial: Any, metric: str) -> Any:
    """Report each epoch's validation score to Optuna and stop the Trainer when the pruner says so.
    A trial at its last epoch is never pruned: stopping saves nothing, and the study learns more
    from a finished trial (and keeps its model) than from a pruned one."""
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
            epoch = round(state.epoch or 0)
            self.history.append({"epoch": epoch, "val": eval_scores(metrics or {})})
            trial.report(float(score), step=epoch)
            # should_prune() first, always: successive halving records the trial's rung in it
            if trial.should_prune() and epoch < round(args.num_train_epochs):
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {metric} {score:.4f}")

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
        started_at=time.time(),
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
        result.plan = trained.plan.model_dump()
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
