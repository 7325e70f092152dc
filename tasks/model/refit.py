"""The refit: when the validation split is small, the first fit (train split, validation every epoch)
only decides how long to train; the final model is trained again from the base model on train +
validation for that many epochs, so it learns from every labelled row. Pure decisions and step
arithmetic (no torch): whether to refit and why, and the refit's plan."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from tasks.config.train import TrainConfig
from tasks.model.plan import TrainingPlan

# A validation split of fewer rows than this is small: two sampling errors of a score near 0.9 on
# it exceed 0.035, more than most settings differ by, and the rows it holds back are worth learning
# from. train.refit=auto refits below it, and a sweep cross-validates its trials below it (the
# small-data benchmark measured refits at 15-170 validation rows: README "Small data").
SMALL_VALIDATION_ROWS = 300


class RefitReport(BaseModel):
    """Whether the final model was trained again on train + validation, why, and how."""

    refit: bool = Field(description="The final model was trained again on train + validation.")
    reason: str = Field(description="Why (or why not), in words.")
    rows: int = Field(0, description="Rows the refit trained on (train + validation); 0 without a refit.")
    epochs: int = Field(0, description="Epochs the refit trained: those the first fit chose.")
    steps: int = Field(0, description="Optimizer steps the refit made.")
    epoch_losses: list[float] = Field(default_factory=list, description="The refit's mean training loss per epoch.")

    def sentence(self) -> str:
        """Whether the final model was trained again on train + validation, on what, and why."""
        if not self.refit:
            return f"Not refit: {self.reason}"
        return (
            f"Refit on all {self.rows} rows (train + validation) for {self.epochs} epochs ({self.steps} steps), "
            f"because {self.reason} Validation scores are the first fit's."
        )


def refit_decision(setting: Literal["auto", "always", "never"], validation_rows: int) -> RefitReport:
    """Whether to refit (train.refit; auto: below SMALL_VALIDATION_ROWS validation rows), and why."""
    if setting == "never":
        return RefitReport(refit=False, reason="train.refit=never: the model of the first fit's chosen epoch is kept.")
    if setting == "always":
        return RefitReport(refit=True, reason="train.refit=always.")
    if validation_rows < SMALL_VALIDATION_ROWS:
        return RefitReport(
            refit=True,
            reason=f"the validation split has {validation_rows} rows (fewer than {SMALL_VALIDATION_ROWS}): "
            "its scores choose the training length, and the final model also learns from those rows.",
        )
    return RefitReport(
        refit=False,
        reason=f"the validation split has {validation_rows} rows (at least {SMALL_VALIDATION_ROWS}): "
        "the first fit's model is kept, a refit would add little for its cost.",
    )


def refit_plan(first: TrainingPlan, epochs: int, rows: int, config: TrainConfig) -> TrainingPlan:
    """The refit's plan: `epochs` (the first fit's choice) over `rows` (train + validation), with the
    first fit's learning rate, schedule and sequence length and train.warmup_epochs of warmup (as
    training_plan counts it); the same epochs over more rows make more steps. A constant rate (the
    default) gives each epoch the rate it had in the first fit; a decaying one ends at the refit's
    last step. No early stopping: nothing is held out to judge by."""
    steps_per_epoch = max(1, math.ceil(rows / (config.batch_size * config.gradient_accumulation_steps)))
    return first.model_copy(
        update={
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "warmup_steps": min(math.ceil(config.warmup_epochs * steps_per_epoch), steps_per_epoch * epochs // 2),
            "patience": 0,
        }
    )
