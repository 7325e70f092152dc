"""Registering a finished model and promoting it over the current champion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PromotionConfig(BaseModel):
    """Registering the model and promoting it over the current champion."""

    model_config = ConfigDict(extra="forbid")

    register_model: bool = Field(
        True, description="Register the model of a finished run or sweep as a new version with the alias `candidate`."
    )
    model_name: str = Field(
        "tuneloop-classifier",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Registered model name in MLflow (letters, digits, _ . -).",
    )
    mode: Literal["auto", "approval", "never"] = Field(
        "auto",
        description="auto: promote when the candidate beats the champion; approval: also ask a person in a Prefect "
        "form (the flow pauses); never: only register.",
    )
    metric: Literal["f1_macro", "f1_weighted", "accuracy"] = Field(
        "f1_macro", description="Test score the candidate and the champion are compared on."
    )
    min_improvement: float = Field(
        0.0, ge=0, le=1, description="The candidate must beat the champion by at least this much on the metric."
    )
    max_class_regression: float = Field(
        0.02, ge=0, le=1, description="Block promotion when any class's test F1 drops by more than this."
    )
    approval_timeout_hours: float = Field(
        24.0, gt=0, le=720, description="How long the approval form waits; no answer rejects the candidate."
    )
