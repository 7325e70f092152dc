"""The pieces of a fine-tuning with transformers' Trainer: the model with a new head (LoRA-wrapped if
asked), the sequence length, the encoded splits, the Trainer with our scores and epoch lines, saving
a model that reloads offline, and the checkpoint to resume from. tasks/model/finetune.py puts them
together into the first fit and the refit."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config.train import TrainConfig
from tasks.core.errors import ConfigError
from tasks.model.plan import (
    MAX_LENGTH_CAP,
    MAX_LENGTH_SAMPLE,
    EpochRecord,
    TrainingPlan,
    choose_max_length,
    epoch_losses,
    epoch_scores,
    eval_scores,
    lora_config,
)
from tasks.model.predict import MODEL_INFO_FILE
from tasks.model.resolve import ModelRef


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


def refit_epoch_callback(log: logging.Logger | Any, plan: TrainingPlan) -> Any:
    """A Trainer callback that logs one line per refit epoch: its mean training loss and seconds."""
    from transformers import TrainerCallback

    class RefitEpochLog(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if "loss" not in (logs or {}) or state.global_step % plan.steps_per_epoch:
                return  # a loss within the epoch (tracking.loss_every_steps)
            epoch = state.global_step // plan.steps_per_epoch
            loss = epoch_losses(state.log_history, plan.steps_per_epoch).get(epoch, float("nan"))
            seconds = time.perf_counter() - self.started
            log.info("refit epoch %d/%d: train loss %.4f (%.1f s)", epoch, plan.epochs, loss, seconds)

    return RefitEpochLog()


def refit_epoch_losses(log_history: list[dict[str, Any]], steps_per_epoch: int) -> list[float]:
    """A refit's mean training loss per epoch, in order."""
    losses = epoch_losses(log_history, steps_per_epoch)
    return [round(losses[epoch], 6) for epoch in sorted(losses)]


def make_trainer(
    network: Any,
    tokenizer: Any,
    encoded: dict[str, Any],
    classes: int,
    metric: str,
    arguments: Any,
    callbacks: list,
    kept: list[Any] | None = None,
) -> Any:
    """A Trainer over the encoded train (and validation) splits that scores validation with our
    metrics, its selection score smoothed over the epochs before (those of a resumed run's log too),
    and appends each evaluation's logits and label ids to `kept` (the Trainer scores rows grouped by
    length, not in the split's order, so the two only make sense together)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    earlier: list[float] = []  # the validation scores of the epochs before

    class Resumed(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            key = f"eval_{metric}"
            earlier[:] = [float(entry[key]) for entry in state.log_history if key in entry]

    def scores(prediction: Any) -> dict[str, float]:
        if kept is not None:
            kept.append((prediction.predictions, prediction.label_ids))
        scored = epoch_scores(prediction.predictions, prediction.label_ids, classes, metric, earlier)
        earlier.append(scored[metric])
        return scored

    trainer = Trainer(
        model=network,
        args=arguments,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),  # none in a refit
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Resumed(), *callbacks],
        compute_metrics=scores,
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


def save_trained(
    trainer: Any, tokenizer: Any, folder: Path, info: dict[str, Any], save: bool = True
) -> tuple[int, int]:
    """Save the trainer's model (`save`); (trainable, total) parameters, counted before LoRA is merged in."""
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    if save:
        save_model(trainer.model, tokenizer, folder, info)
    return trainable, total


def write_predictions(logits: Any, label_ids: Any, labels: list[str], path: Path) -> Path:
    """Held-out predictions as a table, one row per text: the true label, the predicted one and the
    logits (what validation scores, and a decision rule fitted on held-out rows, come from)."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "label": [labels[number] for number in np.asarray(label_ids)],
            "predicted": [labels[number] for number in logits.argmax(axis=-1)],
            "logits": [row.tolist() for row in logits],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def scoring_order(trainer: Any, encoded: Any) -> list[int]:
    """The dataset rows in the order `trainer.predict(encoded)` scores them. transformers 5 (checked
    against 5.x as pinned) samples evaluation batches by length when training groups by length
    (`train_sampling_strategy=group_by_length`), from a generator seeded alike on every call, so the
    order is reproducible; `_get_eval_sampler` is private API, fenced here."""
    sampler = trainer._get_eval_sampler(encoded)
    return list(sampler) if sampler is not None else list(range(len(encoded)))


def validation_predictions(trainer: Any, encoded: Any, labels: list[str], path: Path) -> Path:
    """The trainer's model's predictions of the encoded validation split (write_predictions), in the
    split's row order, so they pair with other models' predictions of the same rows; a refit model
    has no held-out rows of its own, so these are what its validation scores are."""
    import numpy as np

    scored = trainer.predict(encoded)
    order = scoring_order(trainer, encoded)
    logits, label_ids = np.empty_like(scored.predictions), np.empty_like(scored.label_ids)
    logits[order], label_ids[order] = scored.predictions, scored.label_ids
    if not np.array_equal(label_ids, np.asarray(encoded["label"])):  # the order would pair the wrong rows
        raise RuntimeError("The validation predictions cannot be put back in the split's order.")
    return write_predictions(logits, label_ids, labels, path)


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
