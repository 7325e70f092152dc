"""The plan of a fine-tuning, as pure functions of the config and the data (no torch at import):
device and precision, sequence length, epochs, steps, warmup and learning rate, the rule that picks
the best epoch (ties to the later, lower-loss one), and the Trainer and LoRA arguments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.config.train import DEFAULT_LEARNING_RATE, TrainConfig
from tasks.core.errors import ConfigError
from tasks.core.home import environment
from tasks.core.metrics import METRIC_KEYS, classification_metrics

# Set while training_device asks whether CUDA is present: torch then counts GPUs through NVML.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"

# Unset epochs: enough optimizer steps for small data, never fewer than 3 or more than 30 epochs.
AUTO_EPOCH_STEPS, AUTO_EPOCHS_MIN, AUTO_EPOCHS_MAX = 5000, 3, 30


# Unset max_length: the 99th percentile of the training texts' token counts, within the model's limit.
MAX_LENGTH_PERCENTILE, MAX_LENGTH_CAP, MAX_LENGTH_SAMPLE = 99, 512, 20_000


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


def training_device(config: TrainConfig, through_nvml: bool = True) -> str:
    """The device to train on (train.device; auto: CUDA, then MPS, then CPU), refusing one this
    machine lacks and a reduced precision off CUDA. `through_nvml`: CUDA is looked for through NVML
    (PYTORCH_NVML_BASED_CUDA_CHECK), which leaves the CUDA driver unstarted: a sweep checks its
    trials' device before it chooses its GPU (tasks.core.gpus.one_gpu), and a started driver would
    fix which GPUs the process sees (where NVML cannot answer, torch asks the driver). Training asks
    the driver itself (it starts now anyway), which also notices a GPU the driver cannot use."""
    import torch

    with environment({NVML_CHECK: "1"} if through_nvml else {}):
        cuda = torch.cuda.is_available()
    available = {"cuda": cuda, "mps": torch.backends.mps.is_available(), "cpu": True}
    device = (
        next(name for name in ("cuda", "mps", "cpu") if available[name]) if config.device == "auto" else config.device
    )
    if not available[device]:
        raise ConfigError(
            f"train.device={device} but no {device.upper()} device is available here. Use train.device=auto."
        )
    if config.precision not in ("auto", "fp32") and device != "cuda":
        raise ConfigError(f"train.precision={config.precision} needs a CUDA GPU; on {device} use fp32 or auto.")
    return device


def choose_device(config: TrainConfig) -> tuple[str, str]:
    """The device (training_device) and precision to train on; auto precision is bf16 on GPUs that
    support it, else fp16 on CUDA, fp32 elsewhere (asking the GPU starts the CUDA driver)."""
    import torch

    device = training_device(config, through_nvml=False)
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device == "cuda" else "fp32"
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


# Epochs are ranked by the mean validation score of the last SMOOTHED_EPOCHS epochs, ending at the
# epoch ranked: on a validation split of a few dozen rows one epoch's score moves by two or three
# texts, and the best single epoch is often a lucky one (measured: benchmarks/small_data.py).
SMOOTHED_EPOCHS = 3


def smoothed(scores: Sequence[float]) -> float:
    """The mean of the last SMOOTHED_EPOCHS scores (all of them while there are fewer)."""
    window = list(scores)[-SMOOTHED_EPOCHS:]
    return sum(window) / len(window)


def selection_score(score: float, loss: float) -> float:
    """What ranks epochs, from the (smoothed) validation score: the score, and among equal scores
    (to 6 decimals) the lower validation loss. The loss term stays below the score's last decimal,
    so it only breaks ties."""
    return round(score, 6) + 1e-7 / (1.0 + max(loss, 0.0))


# What counts as progress for early stopping: a better (smoothed) validation score, which moves the
# selection score by at least 1e-6 minus the loss term's < 1e-7; or a validation loss lower than
# every epoch's before by more than LOSS_GAIN of it. On a validation split of a few dozen rows the
# score can stay on one value for ten epochs while the model still learns (the same texts right and
# wrong, each more surely): the loss, continuous, sees that; once it stops falling too, the run ends.
SCORE_GAIN = 5e-7
LOSS_GAIN = 1e-3


def epochs_without_progress(epochs: Sequence[tuple[float, float]]) -> int:
    """How many of the last (selection score, validation loss) epochs made no progress: neither a
    better selection score nor a lower loss than all the epochs before them."""
    waited, best_score, best_loss = 0, float("-inf"), float("inf")
    for score, loss in epochs:
        if score > best_score + SCORE_GAIN or loss < best_loss * (1 - LOSS_GAIN):
            waited = 0
        else:
            waited += 1
        best_score, best_loss = max(best_score, score), min(best_loss, loss)
    return waited


def early_stopping(patience: int) -> Any:
    """A Trainer callback that stops after `patience` evaluations without progress (see
    epochs_without_progress), counted from the Trainer's log, so a resumed run counts its epochs
    before the crash too."""
    from transformers import TrainerCallback

    class EarlyStopping(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            epochs = [
                (entry["eval_selection"], entry["eval_loss"])
                for entry in state.log_history
                if "eval_selection" in entry and "eval_loss" in entry
            ]
            if epochs_without_progress(epochs) >= patience:
                control.should_training_stop = True

    return EarlyStopping()


def best_epoch(history: list[EpochRecord], metric: str) -> int:
    """The epoch whose weights are kept (and the one a refit trains to): the highest selection
    score, the smoothed validation score of the epochs up to it (a tie goes to the lower validation
    loss, so the later, better-fitted epoch wins over an early one)."""
    scores = [record.val.get(metric, 0.0) for record in history]

    def rank(index: int) -> float:
        record = history[index]
        if record.selection is not None:
            return record.selection
        loss = record.val_loss if record.val_loss is not None else 0.0
        return selection_score(smoothed(scores[: index + 1]), loss)

    return history[max(range(len(history)), key=rank)].epoch


def epoch_scores(
    logits: Any, label_ids: Any, classes: int, metric: str, earlier: Sequence[float] = ()
) -> dict[str, float]:
    """A Trainer evaluation's scores: our METRIC_KEYS, the cross-entropy, and the selection score
    (smoothed over the `earlier` epochs' validation scores and this one's)."""
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    loss = float(-log_probabilities[np.arange(len(label_ids)), label_ids].mean())
    scores = classification_metrics(label_ids, logits.argmax(-1), list(range(classes)))["overall"]
    selection = selection_score(smoothed([*earlier, scores[metric]]), loss)
    return {**scores, "cross_entropy": loss, "selection": selection}


def training_arguments(
    plan: TrainingPlan,
    config: TrainConfig,
    output_dir: Path,
    device: str,
    precision: str,
    evaluate: bool = True,
    keep_best: bool = True,
) -> Any:
    """The one place our config and plan become transformers' TrainingArguments. `evaluate`: score
    validation every epoch and (`keep_best`) end with the best epoch's weights (the first fit; a
    cross-validation fold chooses on all folds together); else (a refit, nothing held out) train the
    plan's epochs and end with the last."""
    keep_best = evaluate and keep_best
    from transformers import TrainingArguments

    arguments = TrainingArguments(
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
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=2 if keep_best else 1,
        load_best_model_at_end=keep_best,
        metric_for_best_model="selection" if keep_best else None,
        greater_is_better=True if keep_best else None,
        train_sampling_strategy="group_by_length",
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_only_model=False,
    )
    if device == "cuda" and arguments.n_gpu > 1:
        # One GPU per run. With several visible (CUDA started before one was chosen: tasks/core/gpus.py)
        # the Trainer would wrap the model in DataParallel and multiply each batch by the GPU count,
        # off the plan (steps, warmup) and the batch size the defaults were measured with; this is
        # the override transformers itself makes for a model split over GPUs.
        arguments._n_gpu = 1
    return arguments


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


def epoch_losses(log_history: list[dict[str, Any]], steps_per_epoch: int | None = None) -> dict[int, float]:
    """Each evaluated epoch's mean training loss, from the loss windows the Trainer logged (every N
    optimizer steps and at the epoch's end), weighted by the steps each window covers. Epochs end at
    the evaluations, or (a refit, which evaluates nothing) every `steps_per_epoch` steps."""
    if steps_per_epoch:
        last = max((entry["step"] for entry in log_history if "loss" in entry), default=0)
        ends = [(epoch * steps_per_epoch, epoch) for epoch in range(1, math.ceil(last / steps_per_epoch) + 1)]
    else:
        ends = [(entry["step"], round(entry["epoch"])) for entry in log_history if "eval_loss" in entry]
    totals: dict[int, tuple[float, int]] = {}
    previous = 0
    for entry in sorted((entry for entry in log_history if "loss" in entry), key=lambda entry: entry["step"]):
        epoch = next((number for step, number in ends if step >= entry["step"]), None)
        steps, previous = max(entry["step"] - previous, 1), entry["step"]
        if epoch is not None:
            total, count = totals.get(epoch, (0.0, 0))
            totals[epoch] = (total + float(entry["loss"]) * steps, count + steps)
    return {epoch: total / count for epoch, (total, count) in totals.items()}


def eval_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """Our validation scores (METRIC_KEYS) from a Trainer evaluation's `eval_*` entries."""
    return {key: float(metrics[f"eval_{key}"]) for key in METRIC_KEYS if f"eval_{key}" in metrics}
