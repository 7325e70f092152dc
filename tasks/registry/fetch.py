"""A local folder for a model location: a folder as it is, or a run or registry URI downloaded from MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.core.errors import ModelNotFoundError, first_line

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def fetch_model(location: str, tracking_uri: str | None = None) -> Path:
    """A local folder for `location`: the path itself (checked when the model loads), or an MLflow
    artifact URI downloaded from `tracking_uri` (default: the configured store)."""
    if location.startswith(MLFLOW_SCHEMES):
        import mlflow

        from tasks.core.errors import TuneloopError
        from tasks.registry.versions import download_uri
        from tasks.tracking.store import configure_tracking

        store = tracking_uri or configure_tracking()
        try:
            # The registry is the tracking store, named explicitly (MLflow's default registry is global).
            source = download_uri(location, store) if location.startswith("models:/") else location
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, tracking_uri=store, dst_path=tempfile.mkdtemp(prefix="tuneloop-model-")
                )
            )
        except TuneloopError:
            raise
        except Exception as error:  # MLflow raises several types for missing runs, models, artifacts
            reason = first_line(error)
            raise ModelNotFoundError(
                f"Cannot fetch model {location} from MLflow: {reason}. Check the run id or "
                "model name, and MLFLOW_TRACKING_URI."
            ) from None
    return Path(location).expanduser()
