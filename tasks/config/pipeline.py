"""The flows' parameters: `PipelineConfig` (every setting of a training run, grouped by step) and
`SweepPipelineConfig` (the same plus the `sweep` section). Prefect renders them as the run forms."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.config.data import DataConfig
from tasks.config.eval import EvalConfig
from tasks.config.model import ModelConfig
from tasks.config.promotion import PromotionConfig
from tasks.config.split import SplitConfig
from tasks.config.sweep import SweepConfig
from tasks.config.tracking import TrackingConfig
from tasks.config.train import TrainConfig
from tasks.config.validation import ValidationConfig


class PipelineConfig(BaseModel):
    """All settings of a tuneloop run. Endpoints and secrets (MLflow URI, tokens) come from the
    environment, never from here."""

    model_config = ConfigDict(extra="forbid")

    # The form's order: what a user decides first (data and columns, base model, method, quality
    # target and registry), then the steps' finer settings.
    data: DataConfig = Field(default_factory=DataConfig, description="Where the labelled text is.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The pre-trained base model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Scoring and the quality gate.")
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig, description="Model registry: register, compare with the champion, promote."
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="The data-quality gate.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/validation/test split.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow experiment and run.")

    @model_validator(mode="after")
    def _registry_needs_the_model(self) -> PipelineConfig:
        if self.promotion.register_model and not self.tracking.log_model:
            raise ValueError(
                "promotion.register_model needs tracking.log_model (a registered version points at the logged model): "
                "set tracking.log_model=true or promotion.register_model=false"
            )
        return self


def sweep_section_first(schema: dict[str, Any]) -> None:
    """The sweep form opens with the sweep's own section (target, trials, rounds): the schema's
    property order is the order Prefect's form shows."""
    properties = schema.get("properties", {})
    if "sweep" in properties:
        schema["properties"] = {"sweep": properties["sweep"], **{k: v for k, v in properties.items() if k != "sweep"}}


class SweepPipelineConfig(PipelineConfig):
    """All settings of a sweep: a training run's, plus the search space, target and budget. Endpoints
    and secrets (MLflow URI, Optuna storage passwords) come from the environment, never from here."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=sweep_section_first)

    sweep: SweepConfig = Field(default_factory=SweepConfig, description="The search space, target and budget.")

    @model_validator(mode="after")
    def _folds_need_a_refit(self) -> SweepPipelineConfig:
        if self.sweep.cross_validation == "always" and self.train.refit == "never":
            raise ValueError(
                "sweep.cross_validation=always trains one model per fold, so the best trial's model is its refit on "
                "train + validation: set train.refit to auto or always, or sweep.cross_validation to auto or never"
            )
        return self
