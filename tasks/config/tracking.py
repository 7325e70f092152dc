"""Where runs are grouped in MLflow (the server itself comes from MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrackingConfig(BaseModel):
    """Where runs are grouped in MLflow. The server itself comes from MLFLOW_TRACKING_URI."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field("tuneloop", min_length=1, max_length=200, description="MLflow experiment name.")
    run_name: str | None = Field(
        None, max_length=200, description="MLflow run name; unset: the Prefect flow run's name."
    )
    log_model: bool = Field(True, description="Upload the fine-tuned model folder as the run's `model` artifact.")
