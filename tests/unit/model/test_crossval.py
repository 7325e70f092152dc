"""Cross-validation's pure parts (tasks/model/crossval.py): the folds, the pooled score, early
stopping on it, and the baton the folds' threads pass; and when a sweep folds its trials."""

import threading

import numpy as np
import pandas as pd
import pytest

from tasks.config.sweep import SweepConfig
from tasks.data.load import text_groups
from tasks.model.crossval import Lockstep, fold_numbers, goes_on, pooled_record
from tasks.model.plan import EpochRecord, selection_score, smoothed
from tasks.model.refit import SMALL_VALIDATION_ROWS
from tasks.sweep.rounds import trial_folds


def test_folds_are_stratified_keep_equal_texts_together_and_follow_the_seed() -> None:
    texts = [f"text {number % 90}" for number in range(120)]  # 30 texts appear twice
    labels = pd.Series([("a", "b", "c")[number % 3] for number in range(90)] + ["a", "b", "c"] * 10)
    labels[90:] = [labels[number % 90] for number in range(90, 120)]  # a repeated text keeps its label
    folds = fold_numbers(labels, text_groups(pd.Series(texts)), 5, seed=1)
    frame = pd.DataFrame({"text": texts, "label": labels, "fold": folds})
    assert sorted(frame["fold"].unique()) == [0, 1, 2, 3, 4]
    assert frame.groupby("text")["fold"].nunique().max() == 1, "a text is in one fold only"
    shares = frame.groupby("fold")["label"].value_counts(normalize=True).unstack()
    assert (shares.sub(1 / 3).abs() < 0.1).all().all(), "each fold holds every label in about its share"
    assert (fold_numbers(labels, text_groups(pd.Series(texts)), 5, seed=2) != folds).any()


def test_an_epoch_is_scored_on_the_pooled_out_of_fold_rows() -> None:
    """Two folds, each right on one of its two rows: pooled accuracy 0.5, not a mean of fold F1s."""
    logits = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    earlier = history(0.5, 0.9)
    record = pooled_record(earlier, logits, np.array([0, 1, 1, 0]), classes=2, metric="f1_macro")
    assert record.epoch == 3 and record.val["accuracy"] == 0.5 and record.val["f1_macro"] == 0.5
    assert record.val_loss == pytest.approx(np.log(1 + np.exp(-2)) / 2 + np.log(1 + np.exp(2)) / 2)
    assert record.selection == pytest.approx(selection_score(smoothed([0.5, 0.9, 0.5]), record.val_loss or 0))


def history(*scores: float) -> list[EpochRecord]:
    return [
        EpochRecord(epoch=number, train_loss=None, val={"f1_macro": score}, seconds=0, selection=score)
        for number, score in enumerate(scores, start=1)
    ]


def test_early_stopping_on_the_pooled_score_waits_for_patience_epochs_without_gain() -> None:
    assert goes_on(history(0.5, 0.6, 0.6, 0.6), patience=3)
    assert not goes_on(history(0.5, 0.6, 0.6, 0.6, 0.6), patience=3)
    assert goes_on(history(0.5, 0.6, 0.6, 0.6, 0.7), patience=3)
    assert goes_on(history(0.9, 0.1, 0.1, 0.1, 0.1), patience=0), "0 turns early stopping off"


def run_baton(done: list[int], epochs: int, decide: object, failing: int | None = None) -> tuple[list, Lockstep]:
    """Folds as threads that 'train' one epoch per turn (recording it) up to `epochs`."""
    order: list[tuple[int, int]] = []
    lockstep = Lockstep(done, decide)  # type: ignore[arg-type]

    def fold(number: int) -> None:
        error = None
        try:
            going = lockstep.wait(number)
            epoch = done[number]
            while going and epoch < epochs:
                epoch += 1
                if number == failing and epoch == 2:
                    raise RuntimeError("out of memory")
                order.append((number, epoch))
                going = lockstep.epoch_ended(number, epoch)
        except BaseException as caught:
            error = caught
        lockstep.ended(number, error)

    threads = [threading.Thread(target=fold, args=(number,)) for number in range(len(done))]
    for thread in threads:
        thread.start()
    lockstep.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "every fold ended"
    return order, lockstep


def test_the_baton_runs_one_fold_at_a_time_the_furthest_behind_first_and_decides_each_epoch_once() -> None:
    decided: list[int] = []
    order, _ = run_baton([0, 0, 0], 3, lambda epoch: decided.append(epoch) or True)
    assert order == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2), (0, 3), (1, 3), (2, 3)]
    assert decided == [1, 2, 3]
    # After a resume the folds stand at different epochs: the ones behind catch up first.
    decided.clear()
    order, _ = run_baton([2, 1, 1], 3, lambda epoch: decided.append(epoch) or True)
    assert order == [(1, 2), (2, 2), (0, 3), (1, 3), (2, 3)] and decided == [2, 3]


def test_a_decision_to_stop_or_an_error_in_one_fold_stops_every_fold() -> None:
    order, lockstep = run_baton([0, 0], 5, lambda epoch: epoch < 2)
    assert order == [(0, 1), (1, 1), (0, 2), (1, 2)] and lockstep.error is None

    class Pruned(Exception):
        pass

    def prune(epoch: int) -> bool:
        raise Pruned(f"pruned after epoch {epoch}")

    order, lockstep = run_baton([0, 0], 5, prune)
    assert order == [(0, 1), (1, 1)] and isinstance(lockstep.error, Pruned)
    order, lockstep = run_baton([0, 0, 0], 5, lambda epoch: True, failing=1)
    assert order == [(0, 1), (1, 1), (2, 1), (0, 2)] and "out of memory" in str(lockstep.error)


def test_a_sweep_folds_its_trials_on_a_small_validation_split_unless_told_otherwise() -> None:
    small, large = SMALL_VALIDATION_ROWS - 1, SMALL_VALIDATION_ROWS
    auto = SweepConfig(folds=4)
    assert trial_folds(auto, "auto", small) == 4 and trial_folds(auto, "auto", large) == 0
    assert trial_folds(auto, "never", small) == 0, "no refit, no model: auto does not fold"
    assert trial_folds(SweepConfig(cross_validation="always"), "auto", 10**6) == 5
    assert trial_folds(SweepConfig(cross_validation="never"), "always", 10) == 0
