"""Where runs are grouped in MLflow (the server itself comes from MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrackingConfig(BaseModel):
    """Where runs are grouped in MLflow. The server itself comes from MLFLOW_TRACKING_URI."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field("tuneloop", min_length=1, max_length=200, description="MLflow experiment name.")
    run_name: str | None = Field(
        None,
        max_length=200,
        description="MLflow run name; unset: what ran on what, e.g. train-banking-all-MiniLM-L6-v2-1207-1320 "
        "(flow, data file, base model, start time).",
    )
    log_model: bool = Field(
        True, description="Log the fine-tuned model as the run's MLflow Model (needed to register it)."
    )
    outage_grace_seconds: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="When the tracking server stops answering during training, how long the end of training "
        "waits for it before the run fails (no metric is lost meanwhile: they are kept and sent later).",
    )
    loss_every_steps: int = Field(
        50, ge=1, le=1_000_000, description="Log the training loss to the live run every this many optimizer steps."
    )
