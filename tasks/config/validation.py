"""Settings of the data-quality gate: which checks block, how much may be quarantined, text lengths."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ValidationConfig(BaseModel):
    """Bounds of the dataset contract and how many bad rows a run may set aside."""

    model_config = ConfigDict(extra="forbid")

    suite: str = Field(
        "text_classification",
        min_length=1,
        description="Expectation suite (a JSON file in expectations/) to validate with.",
    )
    min_rows: int = Field(50, ge=1, le=10**9, description="Fewest clean rows a dataset may have.")
    min_examples_per_class: int = Field(10, ge=1, le=10**6, description="Fewest clean rows any class may have.")
    min_text_length: int = Field(1, ge=1, le=10**6, description="Shortest allowed text, in characters.")
    max_text_length: int = Field(
        5000,
        ge=1,
        le=10**7,
        description="Longest allowed text, in characters; "
        "longer rows are quarantined (the model truncates to its max length anyway).",
    )
    max_quarantine_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="Largest share of rows that may be quarantined before the run stops instead."
    )
    data_docs: bool = Field(True, description="Write Great Expectations Data Docs (HTML) into the run folder.")
    unseen_test_labels: Literal["quarantine", "fail"] = Field(
        "quarantine",
        description="Rows of the separate test set whose label the training data never has (the model could "
        "never predict it): quarantine them with that reason, or stop the run.",
    )

    @model_validator(mode="after")
    def _lengths_ordered(self) -> ValidationConfig:
        if self.min_text_length > self.max_text_length:
            raise ValueError("validation.min_text_length must not exceed validation.max_text_length")
        return self
