"""Batch scoring: which registered model labels which file, and where the predictions go."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.config.data import DataConfig
from tasks.config.promotion import PromotionConfig

DEFAULT_MODEL = f"models:/{PromotionConfig.model_fields['model_name'].default}@champion"


class ScoreConfig(BaseModel):
    """Label a file of texts with a registered model. The file is read as in training (`data`:
    path, format, text columns, id column); a label column, if any, is not used."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        min_length=1,
        description="models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID or a model folder.",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="The texts to label (default: the sample).")
    output: str | None = Field(
        None,
        description="Where the predictions go: a .parquet or .csv path. Unset: predictions.parquet in the run folder.",
    )
    low_confidence: float = Field(
        0.6, ge=0, le=1, description="Predictions whose score is below this are counted as low-confidence."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per batch.")
