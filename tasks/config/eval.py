"""Which score picks the best epoch and trial, and the optional quality gate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """Which score picks the best epoch and trial, and the optional quality bar."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["f1_macro", "f1_weighted", "accuracy"] = Field(
        "f1_macro", description="Validation score that chooses the best epoch (macro F1 weighs every class equally)."
    )
    min_f1: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Quality gate: fail the run when the test score (eval.metric) is below this. Unset: no gate.",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per batch when predicting.")
