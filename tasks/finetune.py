"""Fine-tune the base model for sequence classification with transformers' Trainer, fully or with
LoRA (peft), on the GPU when there is one; keep the best epoch; save a model that reloads offline."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import ConfigError
from tasks.evaluate import METRIC_KEYS, EvalConfig, classification_metrics
from tasks.predict import MODEL_INFO_FILE
from tasks.resolve import ModelRef
from tasks.split import SplitReport

DEFAULT_LEARNING_RATE = {"full": 1e-4, "lora": 1e-3}
# Unset epochs: enough optimizer steps for small data, never fewer than 3 or more than 30 epochs.
AUTO_EPOCH_STEPS, AUTO_EPOCHS_MIN, AUTO_EPOCHS_MAX = 5000, 3, 30
# Unset max_length: the 99th percentile of the training texts' token counts, within the model's limit.
MAX_LENGTH_PERCENTILE, MAX_LENGTH_CAP, MAX_LENGTH_SAMPLE = 99, 512, 20_000


class TrainConfig(BaseModel):
    """How to fine-tune: method, optimisation, sequence length, device and precision."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["full", "lora"] = Field(
        "full",
        description="Update all weights, or train LoRA adapters "
        "(peft) and the classifier head. On small encoders and CPUs full "
        "fine-tuning gives more F1 per minute; LoRA pays off on large models.",
    )
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="Peak learning rate; unset: 1e-4 for full, 1e-3 for LoRA."
    )
    epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Most epochs to train; early stopping usually ends sooner. Unset: from the data size, "
        "enough for about 5000 optimizer steps, at least 3 and at most 30.",
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="The learning rate after warmup: constant (suits early stopping, which decides the end), "
        "or decaying to zero at the last planned epoch (linear, cosine).",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=1024,
        description="Steps whose gradients add up before one optimizer update (effective batch = batch_size x this).",
    )
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    warmup_epochs: float = Field(
        0.5,
        ge=0,
        le=100,
        description="Epochs of linear learning-rate warmup from zero (fractions allowed; at most half the "
        "planned steps). In epochs, not a share of all steps, so it does not grow with the epoch limit.",
    )
    max_length: int | None = Field(
        None,
        ge=8,
        le=8192,
        description="Tokens per text; longer texts are truncated. Unset: the 99th percentile of the training "
        "texts' lengths (at most 512 and the model's limit). Batches are padded only to their longest text.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for weights of the new head, dropout and order.")
    early_stopping_patience: int = Field(
        3,
        ge=0,
        le=100,
        description="Stop after this many epochs without a better validation score; 0 turns early stopping off.",
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling (alpha / r scales the update).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA branch.")
    lora_target_modules: list[str] | None = Field(
        None, description="Module names to adapt; unset: peft's default for the architecture (query/value for BERT)."
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field("auto", description="auto: CUDA, then MPS, then CPU.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on CUDA, fp32 elsewhere."
    )


class EpochRecord(BaseModel):
    """One epoch: training loss, validation loss and metrics."""

    epoch: int
    train_loss: float | None
    val: dict[str, float]
    seconds: float
    val_loss: float | None = None
    selection: float | None = Field(None, description="The score that ranks epochs (see selection_score).")


class TrainingPlan(BaseModel):
    """How long and how fast one fine-tuning runs, from the training split's size and the config."""

    epochs: int
    steps_per_epoch: int
    warmup_steps: int
    learning_rate: float
    lr_scheduler: str
    patience: int
    max_length: int


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


def choose_device(config: TrainConfig) -> tuple[str, str]:
    """The device and precision to train on, from what is present and what the config asks."""
    import torch

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    device = (
        next(name for name in ("cuda", "mps", "cpu") if available[name]) if config.device == "auto" else config.device
    )
    if not available[device]:
        raise ConfigError(
            f"train.device={device} but no {device.upper()} device is available here. Use train.device=auto."
        )
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device == "cuda" else "fp32"
    if precision != "fp32" and device != "cuda":
        raise ConfigError(f"train.precision={precision} needs a CUDA GPU; on {device} use fp32 or auto.")
    return device, precision


def choose_max_length(token_counts: list[int], limit: int) -> int:
    """The sequence length for texts of these token counts: their 99th percentile, rounded up to a
    multiple of 8 (at least 16), within `limit`. Longer texts are truncated; nothing pays for more."""
    import numpy as np

    wanted = float(np.percentile(token_counts, MAX_LENGTH_PERCENTILE)) if token_counts else limit
    return int(min(limit, max(16, 8 * math.ceil(wanted / 8))))


def training_plan(train_rows: int, config: TrainConfig, max_length: int) -> TrainingPlan:
    """Epochs, steps, warmup and learning rate for `train_rows` training rows. Unset epochs give
    small data enough optimizer steps (a few hundred rows make only a dozen steps an epoch) and
    large data few epochs; early stopping then ends the run when validation stops improving."""
    steps_per_epoch = max(1, math.ceil(train_rows / (config.batch_size * config.gradient_accumulation_steps)))
    epochs = config.epochs or min(AUTO_EPOCHS_MAX, max(AUTO_EPOCHS_MIN, math.ceil(AUTO_EPOCH_STEPS / steps_per_epoch)))
    return TrainingPlan(
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=min(math.ceil(config.warmup_epochs * steps_per_epoch), steps_per_epoch * epochs // 2),
        learning_rate=config.learning_rate or DEFAULT_LEARNING_RATE[config.method],
        lr_scheduler=config.lr_scheduler,
        patience=config.early_stopping_patience,
        max_length=max_length,
    )


def effective_train(config: TrainConfig, plan: TrainingPlan) -> TrainConfig:
    """The train section as it ran: the values left to the data (epochs, learning rate, sequence
    length) filled in from the plan, so that tracked parameters show what was used."""
    chosen = {"epochs": plan.epochs, "learning_rate": plan.learning_rate, "max_length": plan.max_length}
    return config.model_copy(update=chosen)


def selection_score(score: float, loss: float) -> float:
    """What ranks epochs: the validation score, and among equal scores (to 6 decimals) the lower
    validation loss. The loss term stays below the score's last decimal, so it only breaks ties."""
    return round(score, 6) + 1e-7 / (1.0 + max(loss, 0.0))


def best_epoch(history: list[EpochRecord], metric: str) -> int:
    """The epoch whose weights are kept: the highest selection score (a tie in the validation score
    goes to the lower validation loss, so the later, better-fitted epoch wins over an early one)."""

    def rank(record: EpochRecord) -> float:
        if record.selection is not None:
            return record.selection
        return selection_score(record.val.get(metric, 0.0), record.val_loss if record.val_loss is not None else 0.0)

    return max(history, key=rank).epoch


def epoch_scores(logits: Any, label_ids: Any, classes: int, metric: str) -> dict[str, float]:
    """A Trainer evaluation's scores: our METRIC_KEYS, the cross-entropy, and the selection score."""
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    loss = float(-log_probabilities[np.arange(len(label_ids)), label_ids].mean())
    scores = classification_metrics(label_ids, logits.argmax(-1), list(range(classes)))["overall"]
    return {**scores, "cross_entropy": loss, "selection": selection_score(scores[metric], loss)}


def training_arguments(plan: TrainingPlan, config: TrainConfig, output_dir: Path, device: str, precision: str) -> Any:
    """The one place our config and plan become transformers' TrainingArguments."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=plan.epochs,
        learning_rate=plan.learning_rate,
        lr_scheduler_type=plan.lr_scheduler if plan.lr_scheduler != "constant" else "constant_with_warmup",
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(config.batch_size, 64),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        weight_decay=config.weight_decay,
        warmup_steps=plan.warmup_steps,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="selection",
        greater_is_better=True,
        train_sampling_strategy="group_by_length",
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_only_model=False,
    )


def lora_config(config: TrainConfig) -> Any:
    """The one place our config becomes peft's LoraConfig (the classifier head is trained in full)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
    )


def build_model(model: ModelRef, labels: list[str], config: TrainConfig, trust_remote_code: bool) -> Any:
    """The base model with a fresh classification head for `labels`, wrapped with LoRA if asked."""
    from transformers import AutoModelForSequenceClassification

    network = AutoModelForSequenceClassification.from_pretrained(
        model.path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
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
    return network


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


def eval_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """Our validation scores (METRIC_KEYS) from a Trainer evaluation's `eval_*` entries."""
    return {key: float(metrics[f"eval_{key}"]) for key in METRIC_KEYS if f"eval_{key}" in metrics}


def epoch_history(log_history: list[dict[str, Any]], seconds: dict[int, float]) -> list[EpochRecord]:
    """Per-epoch records from the Trainer's log history (which survives a resume from checkpoint)."""
    losses = {round(entry["epoch"]): float(entry["loss"]) for entry in log_history if "loss" in entry}
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
            self.started, self.loss = time.perf_counter(), None

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            metrics, epoch = metrics or {}, round(state.epoch or 0)
            seconds[epoch] = round(time.perf_counter() - self.started, 2)
            loss = f"{self.loss:.4f}" if self.loss is not None else "n/a"
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


def quiet_progress_bars() -> None:
    """Per-batch bars of loading, mapping and saving flood a flow run's log; epochs are logged instead."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()


def finetune(
    splits: SplitReport,
    model: ModelRef,
    config: TrainConfig,
    evaluation: EvalConfig,
    folder: Path,
    trust_remote_code: bool = False,
    log: Any = None,
    callbacks: list | None = None,
) -> TrainedModelRef:
    """Train on the train split until validation stops improving, keep the best epoch, save it to
    `folder/model`. Checkpoints go to `folder/checkpoints`; if some exist, training resumes from the last one."""
    import pandas as pd
    import torch
    from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    log = log or logging.getLogger(__name__)
    quiet_progress_bars()
    device, precision = choose_device(config)
    frames = {name: pd.read_parquet(getattr(splits, name).path) for name in ("train", "validation")}
    labels = sorted(frames["train"]["label"].unique().tolist())
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model.path, trust_remote_code=trust_remote_code)
    network = build_model(model, labels, config, trust_remote_code)
    max_length = sequence_length(config, tokenizer, network, frames["train"]["text"].tolist())
    plan = training_plan(len(frames["train"]), config, max_length)
    encoded = encode_splits(frames, labels, tokenizer, max_length)
    checkpoints = folder / "checkpoints"
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    seconds: dict[int, float] = {}
    extra = [epoch_callback(seconds, log, plan.epochs), *(callbacks or [])]
    if plan.patience:
        extra.append(EarlyStoppingCallback(early_stopping_patience=plan.patience))
    arguments = training_arguments(plan, config, checkpoints, device, precision)
    trainer = make_trainer(network, tokenizer, encoded, len(labels), evaluation.metric, arguments, extra)
    log.info(
        "Fine-tuning %s (%s) on %s, %s: %d train / %d validation rows, up to %d epochs of %d steps "
        "(early stopping after %d without gain), lr %.1e %s, %d tokens per text%s",
        model.base_model,
        config.method,
        device,
        precision,
        splits.train.rows,
        splits.validation.rows,
        plan.epochs,
        plan.steps_per_epoch,
        plan.patience,
        plan.learning_rate,
        plan.lr_scheduler,
        plan.max_length,
        f", resuming from {Path(resume).name}" if resume else "",
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    history = epoch_history(trainer.state.log_history, seconds)
    chosen = best_epoch(history, evaluation.metric)
    model_dir = folder / "model"
    info = {
        "base_model": model.base_model,
        "method": config.method,
        "labels": labels,
        "max_length": plan.max_length,
        "best_epoch": chosen,
    }
    # counted before save_model merges LoRA into the base weights
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    save_model(trainer.model, tokenizer, model_dir, info)
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
    evaluation: EvalConfig,
    folder: Path,
    trust_remote_code: bool = False,
) -> TrainedModelRef:
    """Fine-tune, logging one line per epoch; a rerun of the same run resumes from its last checkpoint.
    Never retried blindly: a retry of the flow run resumes instead."""
    return finetune(splits, model, config, evaluation, folder, trust_remote_code, log=get_run_logger())
