"""The refit decision and its step arithmetic, and a refit's per-epoch losses (tasks/model/refit.py)."""

import pytest

from tasks.config.train import TrainConfig
from tasks.model.plan import epoch_losses, training_plan
from tasks.model.refit import SMALL_VALIDATION_ROWS, RefitReport, refit_decision, refit_plan


def test_auto_refits_below_the_measured_validation_size_and_the_settings_override_it() -> None:
    small, large = SMALL_VALIDATION_ROWS - 1, SMALL_VALIDATION_ROWS
    assert refit_decision("auto", small).refit and not refit_decision("auto", large).refit
    assert f"{small} rows" in refit_decision("auto", small).reason
    assert f"{large} rows" in refit_decision("auto", large).reason
    assert refit_decision("always", 10**6).refit and not refit_decision("never", 10).refit
    assert "train.refit=never" in refit_decision("never", 10).reason


def test_a_refit_trains_the_chosen_epochs_over_train_and_validation_with_the_first_fits_rate_and_warmup() -> None:
    config = TrainConfig(batch_size=32, warmup_epochs=0.5)
    first = training_plan(720, config, 64)  # 23 steps an epoch, 30 epochs planned, 12 warmup steps
    assert (first.steps_per_epoch, first.epochs, first.warmup_steps) == (23, 30, 12)
    plan = refit_plan(first, epochs=7, rows=800, config=config)
    assert (plan.epochs, plan.steps_per_epoch) == (7, 25), "the chosen epochs, each over every row"
    assert refit_plan(first, epochs=7, rows=801, config=config).steps_per_epoch == 26, "a last short batch is a step"
    assert plan.warmup_steps == 13, "half an epoch of the larger data, rounded up"
    assert plan.patience == 0, "nothing is held out to stop on"
    assert (plan.learning_rate, plan.lr_scheduler, plan.max_length) == (1e-4, "constant", 64)
    accumulated = config.model_copy(update={"batch_size": 16, "gradient_accumulation_steps": 2})
    assert refit_plan(first, epochs=7, rows=800, config=accumulated).steps_per_epoch == 25
    assert refit_plan(first, epochs=1, rows=800, config=config).warmup_steps == 12, (
        "warmup stays within half of a short refit's steps"
    )


def test_the_report_says_what_was_chosen_in_words() -> None:
    done = RefitReport(refit=True, reason="train.refit=always.", rows=800, epochs=7, steps=175)
    assert done.sentence().startswith("Refit on all 800 rows (train + validation) for 7 epochs (175 steps)")
    assert "train.refit=always" in done.sentence()
    assert refit_decision("never", 5).sentence().startswith("Not refit: train.refit=never")


@pytest.mark.parametrize("loss_every", [None, 3])
def test_refit_epoch_losses_come_from_the_step_windows_without_evaluations(loss_every: int | None) -> None:
    """A refit evaluates nothing, so its epochs end every `steps_per_epoch` steps; a window logged
    within an epoch (tracking.loss_every_steps) is weighted by its steps."""
    steps_per_epoch, log = 5, []
    for epoch, loss in ((1, 2.0), (2, 1.0)):
        end = epoch * steps_per_epoch
        if loss_every:  # a window of 3 steps at loss + 0.5, the other 2 at loss - 0.75: mean `loss`
            log.append({"step": end - 2, "loss": loss + 0.5, "epoch": epoch - 0.4})
            log.append({"step": end, "loss": loss - 0.75, "epoch": float(epoch)})
        else:
            log.append({"step": end, "loss": loss, "epoch": float(epoch)})
    assert epoch_losses(log, steps_per_epoch) == pytest.approx({1: 2.0, 2: 1.0})
