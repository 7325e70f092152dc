"""Fine-tune the base model for sequence classification with transformers' Trainer, fully or with
LoRA (peft), on the GPU when there is one; keep the best epoch; save a model that reloads offline."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.eval import EvalConfig
from tasks.config.train import TrainConfig
from tasks.core.errors import ConfigError
from tasks.core.quiet import quiet_libraries
from tasks.data.split import SplitReport
from tasks.model.plan import (
    MAX_LENGTH_CAP,
    MAX_LENGTH_SAMPLE,
    EpochRecord,
    TrainingPlan,
    best_epoch,
    choose_device,
    choose_max_length,
    early_stopping,
    epoch_losses,
    epoch_scores,
    eval_scores,
    lora_config,
    training_arguments,
    training_plan,
)
from tasks.model.predict import MODEL_INFO_FILE
from tasks.model.progress import metric_stream, step_progress
from tasks.model.resolve import ModelRef


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
    resumed_from: str | None
    train_seconds: float
    trainable_parameters: int
    total_parameters: int


def build_model(
    model: ModelRef, labels: list[str], config: TrainConfig, trust_remote_code: bool
) -> tuple[Any, dict[str, Any]]:
    """The base model with a fresh classification head for `labels`, wrapped with LoRA if asked, and
    what loading found (the new head's keys are `missing_keys`)."""
    from transformers import AutoModelForSequenceClassification

    network, loading = AutoModelForSequenceClassification.from_pretrained(
        model.path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        output_loading_info=True,
    )
    if config.method == "lora":
        from peft import get_peft_model

        try:
            network = get_peft_model(network, lora_config(config))
        except ValueError as error:
            raise ConfigError(
                f"LoRA cannot adapt {model.base_model}: {error}. Set train.lora_target_modules "
                "to names of its linear layers."
            ) from None
    return network, loading


def loading_line(model: ModelRef, loading: dict[str, Any]) -> str:
    """transformers' load report in one line: the freshly initialised weights and the unused ones."""
    new, unused = sorted(loading.get("missing_keys") or []), sorted(loading.get("unexpected_keys") or [])
    line = f"Loaded {model.base_model}: new weights {', '.join(new) or 'none'} (trained from scratch)"
    return line + (f"; unused checkpoint weights: {', '.join(unused)}" if unused else "")


def model_length_limit(tokenizer: Any, network: Any) -> int:
    """The most tokens per text the model takes (its positions, its tokenizer), and at most 512."""
    limits = [MAX_LENGTH_CAP, tokenizer.model_max_length, getattr(network.config, "max_position_embeddings", None)]
    return int(min(limit for limit in limits if limit))


def token_counts(tokenizer: Any, texts: list[str], seed: int) -> list[int]:
    """Token counts of the texts (a seeded sample of MAX_LENGTH_SAMPLE of them when there are more)."""
    import random

    sample = texts if len(texts) <= MAX_LENGTH_SAMPLE else random.Random(seed).sample(texts, MAX_LENGTH_SAMPLE)
    return [len(ids) for ids in tokenizer(sample, verbose=False)["input_ids"]]


def sequence_length(config: TrainConfig, tokenizer: Any, network: Any, texts: list[str]) -> int:
    """train.max_length when set (within the model's limit), else chosen from the training texts."""
    limit = model_length_limit(tokenizer, network)
    if config.max_length is None:
        return choose_max_length(token_counts(tokenizer, texts, config.seed), limit)
    if config.max_length > limit:
        raise ConfigError(
            f"train.max_length={config.max_length} is more than this model takes ({limit} tokens). "
            f"Set train.max_length to {limit} or less, or leave it unset to choose it from the data."
        )
    return config.max_length


def encode_splits(frames: dict[str, Any], labels: list[str], tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Train and validation frames as tokenized `datasets.Dataset`s with integer labels."""
    import datasets

    index = {label: number for number, label in enumerate(labels)}
    encoded = {}
    for name, frame in frames.items():
        dataset = datasets.Dataset.from_dict(
            {"text": frame["text"].tolist(), "label": [index[label] for label in frame["label"]]}
        )
        encoded[name] = dataset.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
            batched=True,
            remove_columns=["text"],
        )
    return encoded


def epoch_history(log_history: list[dict[str, Any]], seconds: dict[int, float]) -> list[EpochRecord]:
    """Per-epoch records from the Trainer's log history (which survives a resume from checkpoint)."""
    losses = epoch_losses(log_history)
    return [
        EpochRecord(
            epoch=round(entry["epoch"]),
            train_loss=losses.get(round(entry["epoch"])),
            val=eval_scores(entry),
            seconds=seconds.get(round(entry["epoch"]), 0.0),
            val_loss=entry.get("eval_loss"),
            selection=entry.get("eval_selection"),
        )
        for entry in log_history
        if "eval_loss" in entry
    ]


def epoch_callback(seconds: dict[int, float], log: logging.Logger | Any, epochs: int) -> Any:
    """A Trainer callback that times each epoch and logs one progress line for it."""
    from transformers import TrainerCallback

    class EpochLog(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            metrics, epoch = metrics or {}, round(state.epoch or 0)
            seconds[epoch] = round(time.perf_counter() - self.started, 2)
            mean = epoch_losses(state.log_history).get(epoch)
            loss = f"{mean:.4f}" if mean is not None else "n/a"
            log.info(
                "epoch %d/%d: train loss %s, val f1_macro %.4f, accuracy %.4f (%.1f s)",
                epoch,
                epochs,
                loss,
                metrics.get("eval_f1_macro", float("nan")),
                metrics.get("eval_accuracy", float("nan")),
                seconds[epoch],
            )

    return EpochLog()


def make_trainer(
    network: Any, tokenizer: Any, encoded: dict[str, Any], classes: int, metric: str, arguments: Any, callbacks: list
) -> Any:
    """A Trainer over the encoded train/validation splits that scores every epoch with our metrics."""
    from transformers import DataCollatorWithPadding, Trainer
    from transformers.trainer_callback import PrinterCallback

    trainer = Trainer(
        model=network,
        args=arguments,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=callbacks,
        compute_metrics=lambda prediction: epoch_scores(prediction.predictions, prediction.label_ids, classes, metric),
    )
    trainer.remove_callback(PrinterCallback)  # our epoch lines replace its raw dicts
    return trainer


def save_model(network: Any, tokenizer: Any, folder: Path, info: dict[str, Any]) -> None:
    """Merged weights (LoRA folded in), head, tokenizer and label map: everything to reload offline."""
    if hasattr(network, "merge_and_unload"):
        network = network.merge_and_unload()
    network.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def shown_device(device: str) -> str:
    """The device as the run log names it: with several GPUs visible, which one trains (a run
    trains on one: tasks/model/plan.py::training_arguments)."""
    if device != "cuda":
        return device
    import torch

    visible = torch.cuda.device_count()
    return f"cuda:0 (one of the {visible} GPUs this process sees)" if visible > 1 else device


def plan_line(
    model: ModelRef,
    config: TrainConfig,
    splits: SplitReport,
    plan: TrainingPlan,
    device: str,
    precision: str,
    resume: str | None,
) -> str:
    """The one log line that says how this fine-tuning will run."""
    return (
        f"Fine-tuning {model.base_model} ({config.method}) on {device}, {precision}: {splits.train.rows} train / "
        f"{splits.validation.rows} validation rows, up to {plan.epochs} epochs of {plan.steps_per_epoch} steps "
        f"(early stopping after {plan.patience} without gain), lr {plan.learning_rate:.1e} {plan.lr_scheduler}, "
        f"{plan.max_length} tokens per text" + (f", resuming from {Path(resume).name}" if resume else "")
    )


def save_trained(trainer: Any, tokenizer: Any, folder: Path, info: dict[str, Any]) -> tuple[int, int]:
    """Save the best epoch's model; (trainable, total) parameters, counted before LoRA is merged in."""
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    save_model(trainer.model, tokenizer, folder, info)
    return trainable, total


def last_checkpoint(checkpoints: Path, log: logging.Logger | Any) -> str | None:
    """The newest checkpoint that was written to the end: the Trainer writes its state file last, so
    one without a readable state was cut off mid-write (a kill while saving). Such a folder holds
    nothing to resume from and is removed, so that its epoch is trained and saved again."""
    if not checkpoints.is_dir():
        return None
    found = sorted(
        (path for path in checkpoints.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()),
        key=lambda path: int(path.name.split("-")[-1]),
        reverse=True,
    )
    for path in found:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("Checkpoint %s was cut off while it was written: removed, resuming before it", path.name)
            shutil.rmtree(path, ignore_errors=True)
            continue
        return str(path)
    return None


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
) -> TrainedModelRef:
    """Train on the train split until validation stops improving, keep the best epoch, save it to
    `folder/model`. Checkpoints go to `folder/checkpoints`; if some exist, training resumes from the last complete one.
    `progress` hears the share of planned steps done (0-100) as training goes."""
    import pandas as pd
    import torch
    from transformers import AutoTokenizer, set_seed

    log = log or logging.getLogger(__name__)
    quiet_libraries()
    device, precision = choose_device(config)
    frames = {name: pd.read_parquet(getattr(splits, name).path) for name in ("train", "validation")}
    labels = sorted(frames["train"]["label"].unique().tolist())
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model.path, trust_remote_code=trust_remote_code)
    network, loading = build_model(model, labels, config, trust_remote_code)
    log.info(loading_line(model, loading))
    max_length = sequence_length(config, tokenizer, network, frames["train"]["text"].tolist())
    plan = training_plan(len(frames["train"]), config, max_length)
    encoded = encode_splits(frames, labels, tokenizer, max_length)
    checkpoints = folder / "checkpoints"
    resume = last_checkpoint(checkpoints, log)
    seconds: dict[int, float] = {}
    extra = [epoch_callback(seconds, log, plan.epochs), step_progress(plan, log, progress), *(callbacks or [])]
    if plan.patience:
        extra.append(early_stopping(plan.patience))
    arguments = training_arguments(plan, config, checkpoints, device, precision)
    trainer = make_trainer(network, tokenizer, encoded, len(labels), eval_config.metric, arguments, extra)
    log.info(plan_line(model, config, splits, plan, shown_device(device), precision, resume))
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    history = epoch_history(trainer.state.log_history, seconds)
    chosen = best_epoch(history, eval_config.metric)
    model_dir = folder / "model"
    info = {
        "base_model": model.base_model,
        "method": config.method,
        "labels": labels,
        "max_length": plan.max_length,
        "best_epoch": chosen,
    }
    trainable, total = save_trained(trainer, tokenizer, model_dir, info)
    del trainer, network  # frees the GPU for the next trial in this process
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return TrainedModelRef(
        path=str(model_dir),
        base_model=model.base_model,
        method=config.method,
        labels=labels,
        device=device,
        precision=precision,
        history=history,
        best_epoch=chosen,
        plan=plan,
        resumed_from=resume,
        train_seconds=round(train_seconds, 2),
        trainable_parameters=trainable,
        total_parameters=total,
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
    live MLflow run) as they happen. A rerun of the same run resumes from its last checkpoint. Never
    retried blindly: a retry of the flow run resumes instead."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact = create_progress_artifact(0.0, key="training-progress", description="Fine-tuning: planned steps done")
    assert isinstance(artifact, UUID)  # called from sync code, Prefect's sync/async API returns the id

    def progress(percent: float) -> None:
        update_progress_artifact(artifact, percent)

    log = get_run_logger()
    callbacks = [metric_stream(stream, log, folder, grace_seconds, loss_every)] if stream else None
    trained = finetune(
        splits, model, config, eval_config, folder, trust_remote_code, log=log, callbacks=callbacks, progress=progress
    )
    progress(100.0)  # early stopping ends before the planned steps: the training itself is done
    return trained
