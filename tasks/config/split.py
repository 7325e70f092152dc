"""Settings of the train/validation/test split."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SplitConfig(BaseModel):
    """Shares of the three splits and the seed that makes them reproducible."""

    model_config = ConfigDict(extra="forbid")

    train_fraction: float = Field(0.8, gt=0.0, lt=1.0, description="Share of rows for training.")
    validation_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of rows for validation (model and epoch choice)."
    )
    test_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Share of rows held out for the final test; ignored when data.test_path gives a test set.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed of the random split.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must add up to 1 (train + validation + test = {total:g})")
        return self
