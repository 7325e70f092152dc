"""Cross-validation of a tiny BERT on a small table: folds trained in lockstep and cut off midway
(as a killed trial is) continue from each fold's own checkpoint, the fold furthest behind first."""

import logging
from pathlib import Path

import pandas as pd
import pytest
from transformers import TrainerCallback

from tasks.config.train import TrainConfig
from tasks.model.crossval import cross_validate
from tasks.model.finetune import Fitting
from tasks.model.resolve import ModelRef
from tests.helpers.tables import clean_table


def tiny_fitting(tiny_bert: Path, pool: pd.DataFrame, logger: str) -> Fitting:
    """Fine-tuning the tiny BERT on `pool`'s labels on the CPU: 3 epochs, no early stopping."""
    return Fitting(
        model=ModelRef(base_model="tiny", path=str(tiny_bert), source="local folder"),
        config=TrainConfig(epochs=3, batch_size=16, max_length=32, early_stopping_patience=0),
        labels=sorted(pool["label"].unique()),
        metric="f1_macro",
        trust_remote_code=False,
        device="cpu",
        precision="fp32",
        log=logging.getLogger(logger),
    )


def test_folds_cut_off_midway_resume_each_from_its_checkpoint_and_score_every_row(
    tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = clean_table(20)
    fitting = tiny_fitting(tiny_bert, pool, "folds")

    class PowerCut(TrainerCallback):
        saves = 0

        def on_save(self, args, state, control, **kwargs):
            PowerCut.saves += 1
            if PowerCut.saves == 5:  # folds 0, 1, 2 ended epoch 1; fold 0, then fold 1, epoch 2
                raise KeyboardInterrupt("power cut in fold 1's second checkpoint")

    heard: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        cross_validate(fitting, pool, 3, 7, tmp_path, lambda record, plan: heard.append(record.epoch), [PowerCut()])
    assert heard == [1], "epoch 2 was not decided: fold 2 had not ended it"
    ended = {
        fold: sorted(path.name for path in (tmp_path / f"fold-{fold}" / "checkpoints").iterdir()) for fold in range(3)
    }
    assert [len(names) for names in ended.values()] == [1, 1, 1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="folds"):
        report = cross_validate(fitting, pool, 3, 7, tmp_path, lambda record, plan: heard.append(record.epoch))
    assert heard == [1, 2, 3], "each epoch decided once, over both runs"
    assert [record.epoch for record in report.history] == [1, 2, 3]
    assert "cross-validation epoch 1/3" not in caplog.text, "epoch 1 is not trained again"
    predictions = pd.read_parquet(report.predictions)
    assert len(predictions) == len(pool) and set(predictions["label"]) == set(pool["label"])
    assert report.best_epoch in (1, 2, 3) and report.rows == len(pool) and report.folds == 3
    assert not list(tmp_path.glob("fold-*/checkpoints")), "a finished cross-validation keeps no checkpoints"


def test_a_refit_trains_the_epochs_the_first_fit_chose_not_those_it_planned(tiny_bert: Path, tmp_path: Path) -> None:
    """The first fit planned 3 epochs and chose epoch 1: the refit trains 1 epoch over every row."""
    import math

    from tasks.model.finetune import FirstFit, refit
    from tasks.model.plan import training_plan
    from tasks.model.refit import refit_decision

    pool = clean_table(20).sample(frac=1.0, random_state=0)
    frames = {"train": pool.iloc[:40], "validation": pool.iloc[40:]}
    fitting = tiny_fitting(tiny_bert, pool, "refit")
    config = fitting.config
    plan = training_plan(40, config, 32)
    first = FirstFit(
        history=[], best_epoch=1, plan=plan, resumed_from=None, seconds=0.0, trainable_parameters=0, total_parameters=0
    )
    report = refit(fitting, frames, first, refit_decision("always", 20), tmp_path, [])
    assert plan.epochs == 3 and report.epochs == 1 and report.rows == len(pool)
    assert report.steps == math.ceil(len(pool) / 16) and len(report.epoch_losses) == 1
    assert (tmp_path / "model" / "tuneloop.json").exists()
