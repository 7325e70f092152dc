"""Cross-validated fine-tuning, for small data: k folds of train + validation (stratified by label,
equal texts always in the same fold), one model per fold, trained in lockstep one epoch at a time,
so that every epoch is scored on the out-of-fold predictions of all folds together: a score over
every labelled row instead of a validation split of a few dozen. A sweep's trial uses it to choose
its epoch and to feed its pruner; the chosen epoch's out-of-fold predictions are held-out
predictions of every row (what a refit model's validation scores come from).

The folds' Trainers run in threads of their own that pass a baton: one trains while the others
wait at the end of an epoch, the fold that is furthest behind going next (after a resume from
checkpoints too), so the folds share the device one at a time and a run repeats exactly."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.load import text_groups
from tasks.model.finetune import VALIDATION_PREDICTIONS, Fitting, load_base
from tasks.model.plan import (
    EpochRecord,
    TrainingPlan,
    best_epoch,
    epoch_scores,
    epochs_without_progress,
    training_arguments,
    training_plan,
)
from tasks.model.trainer import (
    encode_splits,
    last_checkpoint,
    make_trainer,
    scoring_order,
    sequence_length,
    write_predictions,
)

LOGITS = "logits"  # each fold's validation logits, label ids and pool rows per epoch: fold-<n>/logits/epoch-<e>.npz


class FoldsReport(BaseModel):
    """What cross-validation found: each epoch's out-of-fold scores, the chosen epoch, the plan."""

    folds: int
    rows: int
    history: list[EpochRecord]
    best_epoch: int
    plan: TrainingPlan
    predictions: str
    seconds: float


def fold_numbers(labels: pd.Series, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each row: stratified by label, rows of one text group (equal normalized texts)
    always in the same fold, seeded."""
    from sklearn.model_selection import StratifiedGroupKFold

    numbers = np.zeros(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for number, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels.to_numpy(), groups)):
        numbers[held] = number
    return numbers


def pooled_record(
    history: list[EpochRecord], logits: np.ndarray, label_ids: np.ndarray, classes: int, metric: str
) -> EpochRecord:
    """The next epoch after `history`, scored over the out-of-fold predictions of all folds together
    (macro F1 over the pooled rows, not a mean of per-fold F1s, which on folds of a few rows per
    class runs low), its selection score smoothed over `history` as a single split's is."""
    earlier = [record.val[metric] for record in history]
    scores = epoch_scores(logits, label_ids, classes, metric, earlier)
    loss = scores.pop("cross_entropy")
    selection = scores.pop("selection")
    epoch = len(history) + 1
    return EpochRecord(epoch=epoch, train_loss=None, val=scores, seconds=0.0, val_loss=loss, selection=selection)


class Lockstep:
    """The baton the folds' threads pass at the end of each epoch (see the module docstring). When
    every fold has ended epoch e, `on_epoch(e)` decides (in the thread that ended it last) whether
    training goes on; an error in any fold, or in the decision, stops them all."""

    def __init__(self, done_epochs: list[int], on_epoch: Callable[[int], bool]) -> None:
        self.done = list(done_epochs)
        self.active = set(range(len(done_epochs)))
        self.on_epoch = on_epoch
        self.decided = min(done_epochs, default=0)  # epochs decided so far
        self.stop = False
        self.error: BaseException | None = None
        self.started = False
        self.condition = threading.Condition()

    def turn(self) -> int | None:
        """The fold that trains next: the one furthest behind (then the lowest number)."""
        return min(self.active, key=lambda fold: (self.done[fold], fold), default=None)

    def wait(self, fold: int) -> bool:
        """Block until it is `fold`'s turn; False when training should stop instead."""
        with self.condition:
            self.condition.wait_for(lambda: self.started and (self.turn() == fold or self.stop))
            return not self.stop

    def start(self) -> None:
        """Let the first fold go (once every thread waits: none starts while another is starting)."""
        with self.condition:
            self.started = True
            self.condition.notify_all()

    def epoch_ended(self, fold: int, epoch: int) -> bool:
        """`fold` ended `epoch`: decide when it was the last to, pass the baton, wait for the next turn.
        False when training should stop."""
        with self.condition:
            self.done[fold] = epoch
            if not self.stop and min(self.done) > self.decided:
                self.decided = min(self.done)
                try:
                    self.stop = not self.on_epoch(self.decided)
                except BaseException as error:  # e.g. the pruner's TrialPruned: every fold stops
                    self.error, self.stop = error, True
            self.condition.notify_all()
        return self.wait(fold)

    def ended(self, fold: int, error: BaseException | None = None) -> None:
        """`fold`'s training ended (or failed with `error`: every fold stops)."""
        with self.condition:
            self.active.discard(fold)
            if error is not None and self.error is None:
                self.error, self.stop = error, True
            self.condition.notify_all()


def lockstep_callback(lockstep: Lockstep, fold: int, logits_folder: Path, kept: list[Any], rows: np.ndarray) -> Any:
    """A fold's Trainer callback: after each epoch's evaluation write the fold's validation logits
    (`kept` by the Trainer's scoring, with the pool `rows` they score in that order; before the
    checkpoint, so a crash between the two trains the epoch again rather than lose them), and after
    its checkpoint pass the baton."""
    from transformers import TrainerCallback

    class Lockstepped(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            logits, label_ids = kept.pop()
            logits_folder.mkdir(parents=True, exist_ok=True)
            path = logits_folder / f"epoch-{round(state.epoch or 0)}.npz"
            np.savez(path, logits=np.asarray(logits, dtype=np.float32), label_ids=np.asarray(label_ids), rows=rows)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not lockstep.epoch_ended(fold, round(state.epoch or 0)):
                control.should_training_stop = True

    return Lockstepped()


def run_folds(trainers: list[Any], resumes: list[str | None], lockstep: Lockstep) -> None:
    """Train every fold in a thread of its own, passing the baton, until all end; re-raise the first
    error (a failed fold, the pruner's decision, an interrupt) in this thread."""

    def train(fold: int) -> None:
        error: BaseException | None = None
        try:
            if lockstep.wait(fold):
                trainers[fold].train(resume_from_checkpoint=resumes[fold])
        except BaseException as caught:  # handed to the caller's thread below
            error = caught
        lockstep.ended(fold, error)

    threads = [threading.Thread(target=train, args=(fold,), name=f"fold-{fold}") for fold in range(len(trainers))]
    for thread in threads:
        thread.start()
    lockstep.start()
    for thread in threads:
        thread.join()
    if lockstep.error is not None:
        raise lockstep.error


def epoch_logits(folder: Path, folds: int, epoch: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Every fold's validation logits and label ids of `epoch`, joined in the pool's row order (so
    they pair row by row with another model's out-of-fold predictions of the same folds); None while
    a fold has not written them."""
    paths = [folder / f"fold-{fold}" / LOGITS / f"epoch-{epoch}.npz" for fold in range(folds)]
    if not all(path.is_file() for path in paths):
        return None
    parts = [np.load(path) for path in paths]
    logits = np.concatenate([part["logits"] for part in parts])
    label_ids = np.concatenate([part["label_ids"] for part in parts])
    rows = np.concatenate([part["rows"] for part in parts])
    ordered_logits, ordered_ids = np.empty_like(logits), np.empty_like(label_ids)
    ordered_logits[rows], ordered_ids[rows] = logits, label_ids
    return ordered_logits, ordered_ids


def goes_on(history: list[EpochRecord], patience: int) -> bool:
    """Whether training goes on after the last epoch of `history`: early stopping on the pooled
    scores by the single split's rule (epochs_without_progress; patience 0: never stops)."""
    epochs = [(record.selection or 0.0, record.val_loss or 0.0) for record in history]
    return not patience or epochs_without_progress(epochs) < patience


def epoch_line(record: EpochRecord, epochs: int, folds: int, rows: int, metric: str) -> str:
    """The log line of one cross-validated epoch."""
    return (
        f"cross-validation epoch {record.epoch}/{epochs} ({folds} folds, {rows} rows out of fold): val {metric} "
        f"{record.val[metric]:.4f}, accuracy {record.val['accuracy']:.4f}, loss {record.val_loss or 0.0:.4f} "
        f"({record.seconds:.1f} s)"
    )


def epoch_record(folder: Path, folds: int, history: list[EpochRecord], classes: int, metric: str) -> EpochRecord:
    """The pooled record of the epoch after `history`, from the logits every fold wrote for it."""
    epoch = len(history) + 1
    scored = epoch_logits(folder, folds, epoch)
    assert scored is not None, f"every fold ended epoch {epoch}, so each wrote its logits"
    return pooled_record(history, *scored, classes, metric)


def decided_before(folder: Path, folds: int, epochs: int, classes: int, metric: str) -> list[EpochRecord]:
    """The records of the first `epochs` epochs, which every fold ended before a crash: the same ones
    again, from the logits the folds wrote."""
    history: list[EpochRecord] = []
    for _ in range(epochs):
        history.append(epoch_record(folder, folds, history, classes, metric))
    return history


def checkpoint_epoch(checkpoint: str | None) -> int:
    """The epoch a checkpoint ended (0 without one)."""
    if checkpoint is None:
        return 0
    return round(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["epoch"])


@dataclass
class Folds:
    """Each fold's Trainer, the checkpoint it resumes from, the list it keeps its validation logits
    in (the Trainer's own: a dataclass, which copies nothing) and the pool rows it scores, in its
    scoring order; the plan (fold 0's: folds differ by a few rows)."""

    trainers: list[Any]
    resumes: list[str | None]
    kept: list[list[Any]]
    rows: list[np.ndarray]
    plan: TrainingPlan


def fold_trainers(fitting: Fitting, pool: pd.DataFrame, numbers: np.ndarray, folder: Path, callbacks: list) -> Folds:
    """Each fold's Trainer (its own model, seeded alike; checkpoints in `folder/fold-<n>`) and what
    goes with it (Folds)."""
    config, log = fitting.config, fitting.log
    trainers: list[Any] = []
    resumes: list[str | None] = []
    kept: list[list[Any]] = []
    rows: list[np.ndarray] = []
    plan: TrainingPlan | None = None
    for fold in range(int(numbers.max()) + 1):
        tokenizer, network = load_base(fitting)
        frames = {"train": pool[numbers != fold], "validation": pool[numbers == fold]}
        if plan is None:
            max_length = sequence_length(config, tokenizer, network, pool["text"].tolist())
            plan = training_plan(len(frames["train"]), config, max_length).model_copy(update={"patience": 0})
        encoded = encode_splits(frames, fitting.labels, tokenizer, plan.max_length)
        checkpoints = folder / f"fold-{fold}" / "checkpoints"
        resumes.append(last_checkpoint(checkpoints, log))
        arguments = training_arguments(plan, config, checkpoints, fitting.device, fitting.precision, keep_best=False)
        kept.append([])
        trainers.append(
            make_trainer(
                network, tokenizer, encoded, len(fitting.labels), fitting.metric, arguments, callbacks, kept[-1]
            )
        )
        rows.append(np.flatnonzero(numbers == fold)[scoring_order(trainers[-1], encoded["validation"])])
    assert plan is not None
    return Folds(trainers=trainers, resumes=resumes, kept=kept, rows=rows, plan=plan)


def cross_validate(
    fitting: Fitting,
    pool: pd.DataFrame,
    folds: int,
    seed: int,
    folder: Path,
    on_epoch: Callable[[EpochRecord, TrainingPlan], None] | None = None,
    callbacks: list | None = None,
) -> FoldsReport:
    """Train `folds` folds of `pool` in lockstep (module docstring), each epoch scored on the pooled
    out-of-fold predictions and handed to `on_epoch` (which may raise to stop, e.g. the pruner);
    stop early on that score, choose the epoch, and write its out-of-fold predictions to
    `folder/validation_predictions.parquet`. A rerun resumes every fold from its last checkpoint.
    `callbacks` go to every fold's Trainer."""
    config, log, metric = fitting.config, fitting.log, fitting.metric
    pool = pool.reset_index(drop=True)
    numbers = fold_numbers(pool["label"], text_groups(pool["text"]), folds, seed)
    built = fold_trainers(fitting, pool, numbers, folder, callbacks or [])
    trainers, resumes, plan = built.trainers, built.resumes, built.plan
    history: list[EpochRecord] = []
    clock = [time.perf_counter()]

    def trains_on() -> bool:
        return len(history) < plan.epochs and goes_on(history, config.early_stopping_patience)

    def decide(epoch: int) -> bool:
        assert epoch == len(history) + 1, f"epoch {epoch} decided after {len(history)}"
        record = epoch_record(folder, folds, history, len(fitting.labels), metric)
        record = record.model_copy(update={"seconds": round(time.perf_counter() - clock[0], 2)})
        clock[0] = time.perf_counter()
        history.append(record)
        log.info(epoch_line(record, plan.epochs, folds, len(pool), metric))
        if on_epoch is not None:
            on_epoch(record, plan)
        return trains_on()

    done = [checkpoint_epoch(resume) for resume in resumes]
    history += decided_before(folder, folds, min(done), len(fitting.labels), metric)
    lockstep = Lockstep(done, decide)
    # a crash after the decision to stop: the folds stay where they ended
    lockstep.stop = bool(history) and not trains_on()
    started = time.perf_counter()
    for fold, trainer in enumerate(trainers):
        logits_folder = folder / f"fold-{fold}" / LOGITS
        trainer.add_callback(lockstep_callback(lockstep, fold, logits_folder, built.kept[fold], built.rows[fold]))
    log.info(
        "Cross-validating %d folds of %d rows (train + validation), up to %d epochs of %d steps each, in lockstep",
        folds,
        len(pool),
        plan.epochs,
        plan.steps_per_epoch,
    )
    run_folds(trainers, resumes, lockstep)
    chosen = best_epoch(history, metric)  # by the same rule as a single validation split's
    scored = epoch_logits(folder, folds, chosen)
    assert scored is not None
    if not np.array_equal(scored[1], pool["label"].map(fitting.labels.index).to_numpy()):
        raise RuntimeError("The out-of-fold predictions cannot be put back in the pool's row order.")
    predictions = write_predictions(*scored, fitting.labels, folder / VALIDATION_PREDICTIONS)
    for fold in range(folds):
        shutil.rmtree(folder / f"fold-{fold}" / "checkpoints", ignore_errors=True)
    return FoldsReport(
        folds=folds,
        rows=len(pool),
        history=history,
        best_epoch=chosen,
        plan=plan,
        predictions=str(predictions),
        seconds=round(time.perf_counter() - started, 2),
    )
