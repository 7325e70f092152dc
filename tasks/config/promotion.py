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
    rule: Literal["better", "not_worse"] = Field(
        "better",
        description="better: promote when the candidate beats the champion with `confidence` (a paired bootstrap "
        "of the metric difference on the same test rows); not_worse: promote unless it is worse by more than "
        "`margin` with that confidence (fresh data wins ties).",
    )
    confidence: float = Field(
        0.95,
        ge=0.5,
        le=0.999,
        description="How sure the paired test must be (one-sided), for the rule and for a class's drop.",
    )
    margin: float = Field(
        0.01, ge=0, le=1, description="rule=not_worse: how much worse than the champion the candidate may be."
    )
    min_improvement: float = Field(
        0.0, ge=0, le=1, description="rule=better: the measured gain must also be at least this large."
    )
    max_class_regression: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Block promotion when a class's test F1 drops by more than this, significantly (paired test) and "
        "on at least `min_class_support` texts.",
    )
    min_class_support: int = Field(
        8,
        ge=1,
        le=100_000,
        description="Test texts a class needs before its drop can block promotion (measured: with fewer than 8, even "
        "losing half of them is not significant at 0.95).",
    )
    baseline_competes: bool = Field(
        True,
        description="The TF-IDF baseline competes with the fine-tune: it is registered instead when it beats the "
        "fine-tune on validation beyond noise, and a fine-tune that scores below it is never promoted.",
    )
    approval_timeout_hours: float = Field(
        24.0, gt=0, le=720, description="How long the approval form waits; no answer rejects the candidate."
    )
