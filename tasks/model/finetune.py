"""Fine-tune the base model for sequence classification with transformers' Trainer, fully or with
LoRA (peft), on the GPU when there is one. The first fit trains on the train split and scores
validation every epoch, which chooses how long to train; with a small validation split the model is
then refit (tasks/model/refit.py) on train + validation for that long. The final model is saved so
that it reloads offline, beside the validation predictions its scores come from."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.eval import EvalConfig
from tasks.config.train import TrainConfig
from tasks.core.disk import MB, check_free_space, weights_bytes
from tasks.core.quiet import quiet_libraries
from tasks.data.split import SplitReport
from tasks.model.plan import (
    EpochRecord,
    TrainingPlan,
    best_epoch,
    choose_device,
    early_stopping,
    training_arguments,
    training_plan,
)
from tasks.model.progress import metric_stream, step_progress
from tasks.model.refit import RefitReport, refit_decision, refit_plan
from tasks.model.resolve import ModelRef
from tasks.model.trainer import (
    build_model,
    encode_splits,
    epoch_callback,
    epoch_history,
    last_checkpoint,
    loading_line,
    make_trainer,
    refit_epoch_callback,
    refit_epoch_losses,
    save_trained,
    sequence_length,
    shown_device,
    validation_predictions,
)

FIRST_FIT = "first_fit.json"  # a refit run's first fit, once it ended: a rerun after a crash starts at the refit
VALIDATION_PREDICTIONS = "validation_predictions.parquet"


@dataclass
class Fitting:
    """What both phases of a fine-tuning share: the base model, the settings, the labels, the device,
    the log and where progress goes (`progress` for the first fit, `refit_progress` for the refit)."""

    model: ModelRef
    config: TrainConfig
    labels: list[str]
    metric: str
    trust_remote_code: bool
    device: str
    precision: str
    log: Any
    progress: Callable[[float], None] | None = None
    refit_progress: Callable[[float], None] | None = None

    def info(self, **extra: Any) -> dict[str, Any]:
        """The model's `tuneloop.json`: base model, method, labels and `extra`."""
        return {"base_model": self.model.base_model, "method": self.config.method, "labels": self.labels, **extra}


class FirstFit(BaseModel):
    """What the first fit found: each epoch's validation scores, the chosen epoch and the plan."""

    history: list[EpochRecord]
    best_epoch: int
    plan: TrainingPlan
    resumed_from: str | None
    seconds: float
    trainable_parameters: int
    total_parameters: int


class TrainedModelRef(BaseModel):
    """The fine-tuned model on disk and how it was trained."""

    path: str
    base_model: str
    method: str
    labels: list[str]
    device: str
    precision: str
    history: list[EpochRecord]
    best_epoch: int
    plan: TrainingPlan
    refit: RefitReport
    validation_predictions: str
    resumed_from: str | None
    train_seconds: float
    trainable_parameters: int
    total_parameters: int


def plan_line(
    model: ModelRef,
    config: TrainConfig,
    rows: tuple[int, int],
    plan: TrainingPlan,
    device: str,
    precision: str,
    resume: str | None,
) -> str:
    """The one log line that says how this fine-tuning will run (`rows`: train, validation)."""
    return (
        f"Fine-tuning {model.base_model} ({config.method}) on {device}, {precision}: {rows[0]} train / "
        f"{rows[1]} validation rows, up to {plan.epochs} epochs of {plan.steps_per_epoch} steps "
        f"(early stopping after {plan.patience} without a better score or loss), "
        f"lr {plan.learning_rate:.1e} {plan.lr_scheduler}, {plan.max_length} tokens per text"
        + (f", resuming from {Path(resume).name}" if resume else "")
    )


def refit_line(refit: RefitReport, plan: TrainingPlan, resume: str | None) -> str:
    """The log line that says the refit starts, on what and for how long."""
    return (
        f"Refit on train + validation ({refit.rows} rows) for the {plan.epochs} epochs the first fit chose "
        f"({refit.steps} steps): {refit.reason}" + (f" Resuming from {Path(resume).name}." if resume else "")
    )


def load_base(fitting: Fitting) -> tuple[Any, Any]:
    """The tokenizer and the base model with a new head, seeded, its load report logged."""
    from transformers import AutoTokenizer, set_seed

    set_seed(fitting.config.seed)
    tokenizer = AutoTokenizer.from_pretrained(fitting.model.path, trust_remote_code=fitting.trust_remote_code)
    network, loading = build_model(fitting.model, fitting.labels, fitting.config, fitting.trust_remote_code)
    fitting.log.info(loading_line(fitting.model, loading))
    return tokenizer, network


def first_fit(fitting: Fitting, frames: dict[str, pd.DataFrame], folder: Path, keep: bool, callbacks: list) -> FirstFit:
    """Train on the train split, score validation every epoch, stop when it stops improving and choose
    the epoch; write the chosen weights' validation predictions, and (`keep`) save them as the model."""
    config, log, labels = fitting.config, fitting.log, fitting.labels
    tokenizer, network = load_base(fitting)
    max_length = sequence_length(config, tokenizer, network, frames["train"]["text"].tolist())
    plan = training_plan(len(frames["train"]), config, max_length)
    encoded = encode_splits(frames, labels, tokenizer, max_length)
    checkpoints = folder / "checkpoints"
    resume = last_checkpoint(checkpoints, log)
    seconds: dict[int, float] = {}
    extra = [epoch_callback(seconds, log, plan.epochs), step_progress(plan, log, fitting.progress), *callbacks]
    if plan.patience:
        extra.append(early_stopping(plan.patience))
    arguments = training_arguments(plan, config, checkpoints, fitting.device, fitting.precision)
    trainer = make_trainer(network, tokenizer, encoded, len(labels), fitting.metric, arguments, extra)
    device = shown_device(fitting.device)
    rows = (len(frames["train"]), len(frames["validation"]))
    log.info(plan_line(fitting.model, config, rows, plan, device, fitting.precision, resume))
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    history = epoch_history(trainer.state.log_history, seconds)
    chosen = best_epoch(history, fitting.metric)
    validation_predictions(trainer, encoded["validation"], labels, folder / VALIDATION_PREDICTIONS)
    info = fitting.info(best_epoch=chosen, max_length=plan.max_length)
    trainable, total = save_trained(trainer, tokenizer, folder / "model", info, save=keep)
    return FirstFit(
        history=history,
        best_epoch=chosen,
        plan=plan,
        resumed_from=resume,
        seconds=round(train_seconds, 2),
        trainable_parameters=trainable,
        total_parameters=total,
    )


def refit(
    fitting: Fitting,
    frames: dict[str, pd.DataFrame],
    first: FirstFit,
    decision: RefitReport,
    folder: Path,
    callbacks: list,
) -> RefitReport:
    """Train the base model again, on train + validation, for the epochs the first fit chose, and save
    it as the model."""
    config, log = fitting.config, fitting.log
    tokenizer, network = load_base(fitting)
    combined = pd.concat([frames["train"], frames["validation"]], ignore_index=True)
    plan = refit_plan(first.plan, first.best_epoch, len(combined), config)
    encoded = encode_splits({"train": combined}, fitting.labels, tokenizer, plan.max_length)
    checkpoints = folder / "refit" / "checkpoints"
    resume = last_checkpoint(checkpoints, log)
    steps = plan.epochs * plan.steps_per_epoch
    report = decision.model_copy(update={"rows": len(combined), "epochs": plan.epochs, "steps": steps})
    progress = step_progress(plan, log, fitting.refit_progress, phase="refit epoch")
    extra = [refit_epoch_callback(log, plan), progress, *callbacks]
    arguments = training_arguments(plan, config, checkpoints, fitting.device, fitting.precision, evaluate=False)
    trainer = make_trainer(network, tokenizer, encoded, len(fitting.labels), fitting.metric, arguments, extra)
    log.info(refit_line(report, plan, resume))
    trainer.train(resume_from_checkpoint=resume)
    info = fitting.info(best_epoch=first.best_epoch, max_length=plan.max_length, refit=True)
    save_trained(trainer, tokenizer, folder / "model", info)
    losses = refit_epoch_losses(trainer.state.log_history, plan.steps_per_epoch)
    return report.model_copy(update={"epoch_losses": losses})


def first_fit_of(
    fitting: Fitting, frames: dict[str, pd.DataFrame], folder: Path, refit: bool, callbacks: list
) -> FirstFit:
    """The first fit: run now, or (a refit run continued after a crash) read from where it ended."""
    record = folder / FIRST_FIT
    if refit and record.is_file():
        first = FirstFit.model_validate_json(record.read_text(encoding="utf-8"))
        fitting.log.info("The first fit had ended (epoch %d chosen): continuing with the refit", first.best_epoch)
        return first
    first = first_fit(fitting, frames, folder, keep=not refit, callbacks=callbacks)
    if refit:
        record.write_text(first.model_dump_json(), encoding="utf-8")
    return first


def free_device() -> None:
    """Give the GPU memory of a finished training back (the Trainer's reference cycles can keep its
    model alive): before the refit loads its own model, and for the next trial in this process."""
    import gc

    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def prepare(
    splits: SplitReport, model: ModelRef, config: TrainConfig, metric: str, trust_remote_code: bool, log: Any
) -> tuple[Fitting, dict[str, pd.DataFrame]]:
    """What a fine-tuning of `model` on `splits` needs (device and precision chosen, labels from the
    train split), and the train and validation frames."""
    quiet_libraries()
    device, precision = choose_device(config)
    frames = {name: pd.read_parquet(getattr(splits, name).path) for name in ("train", "validation")}
    fitting = Fitting(
        model=model,
        config=config,
        labels=sorted(frames["train"]["label"].unique().tolist()),
        metric=metric,
        trust_remote_code=trust_remote_code,
        device=device,
        precision=precision,
        log=log or logging.getLogger(__name__),
    )
    return fitting, frames


def finetune(
    splits: SplitReport,
    model: ModelRef,
    config: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    trust_remote_code: bool = False,
    log: Any = None,
    callbacks: list | None = None,
    progress: Callable[[float], None] | None = None,
    refit_callbacks: list | None = None,
) -> TrainedModelRef:
    """Fine-tune: the first fit chooses the epoch on validation (keeping its model, or with a refit
    training again on train + validation for that long); the final model goes to `folder/model`.
    Checkpoints go to `folder/checkpoints` (the refit's to `folder/refit/checkpoints`); a rerun
    resumes from the last complete one of the phase it was in. `progress` hears the share of planned
    steps done (0-100) as training goes; `refit_callbacks` go to the refit's Trainer."""
    fitting, frames = prepare(splits, model, config, eval_config.metric, trust_remote_code, log)
    decision = refit_decision(config.refit, len(frames["validation"]))
    if progress is not None:
        share = 50.0 if decision.refit else 100.0  # of the progress, for the first fit
        fitting.progress = lambda done: progress(done * share / 100)
        fitting.refit_progress = lambda done: progress(share + done * (100 - share) / 100)
    first = first_fit_of(fitting, frames, folder, decision.refit, callbacks or [])
    free_device()
    started = time.perf_counter()
    report = refit(fitting, frames, first, decision, folder, refit_callbacks or []) if decision.refit else decision
    train_seconds = first.seconds + (time.perf_counter() - started if decision.refit else 0.0)
    free_device()
    return TrainedModelRef(
        path=str(folder / "model"),
        base_model=model.base_model,
        method=config.method,
        labels=fitting.labels,
        device=fitting.device,
        precision=fitting.precision,
        history=first.history,
        best_epoch=first.best_epoch,
        plan=first.plan,
        refit=report,
        validation_predictions=str(folder / VALIDATION_PREDICTIONS),
        resumed_from=first.resumed_from,
        train_seconds=round(train_seconds, 2),
        trainable_parameters=first.trainable_parameters,
        total_parameters=first.total_parameters,
    )


@task(name="finetune_model")
def finetune_model(
    splits: SplitReport,
    model: ModelRef,
    config: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    trust_remote_code: bool = False,
    stream: Callable[[list[tuple[str, float, int, int]]], None] | None = None,
    grace_seconds: float = 120.0,
    loss_every: int = 50,
) -> TrainedModelRef:
    """Fine-tune, logging one line per epoch (and progress within it), with a Prefect progress artifact
    on the flow run; the loss every `loss_every` steps and each epoch's metrics go to `stream` (the
    live MLflow run) as they happen (a refit's loss as `refit/loss`). A rerun of the same run resumes
    from its last checkpoint. Never retried blindly: a retry of the flow run resumes instead."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact = create_progress_artifact(0.0, key="training-progress", description="Fine-tuning: planned steps done")
    assert isinstance(artifact, UUID)  # called from sync code, Prefect's sync/async API returns the id

    def progress(percent: float) -> None:
        update_progress_artifact(artifact, percent)

    log = get_run_logger()
    weights = weights_bytes(model.path)
    copies = 10 if config.method == "full" else 3  # checkpoints with optimizer state, the model, its MLflow copy
    check_free_space(folder, copies * weights + 100 * MB, f"Fine-tuning {model.base_model} ({config.method})")
    streams = []
    if stream is not None:
        streams = [metric_stream(stream, log, folder, grace_seconds, loss_every, phase) for phase in ("train", "refit")]
    trained = finetune(
        splits,
        model,
        config,
        eval_config,
        folder,
        trust_remote_code,
        log=log,
        callbacks=streams[:1],
        progress=progress,
        refit_callbacks=streams[1:],
    )
    progress(100.0)  # early stopping ends before the planned steps: the training itself is done
    return trained
