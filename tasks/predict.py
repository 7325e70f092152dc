"""Load a saved tuneloop model (a folder, or an MLflow run or registry URI) and label texts."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ModelNotFoundError, first_line

MODEL_INFO_FILE = "tuneloop.json"
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


@dataclass
class Classifier:
    """A loaded model with its tokenizer, labels and sequence length."""

    network: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    device: str


def fetch_model(location: str, tracking_uri: str | None = None) -> Path:
    """A local folder for `location`: the folder itself, or an MLflow artifact URI downloaded from
    `tracking_uri` (default: the configured store)."""
    if location.startswith(MLFLOW_SCHEMES):
        import mlflow

        from tasks.errors import TuneloopError
        from tasks.registry import download_uri
        from tasks.track import configure_tracking

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
    path = Path(location).expanduser()
    if not (path / MODEL_INFO_FILE).is_file():
        raise ModelNotFoundError(
            f"No tuneloop model at {location}. Pass the `model` folder of a run "
            "(.tuneloop/runs/<run>/model) or an MLflow URI such as runs:/<run_id>/model."
        )
    return path


def load_classifier(location: str | Path, tracking_uri: str | None = None) -> Classifier:
    """Load a saved model for inference, on the GPU when there is one; offline, from local files only."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = fetch_model(str(location), tracking_uri)
    info = json.loads((folder / MODEL_INFO_FILE).read_text(encoding="utf-8"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    network = (
        AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)
        .to(device)
        .eval()
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return Classifier(
        network=network,
        tokenizer=tokenizer,
        labels=list(info["labels"]),
        max_length=int(info["max_length"]),
        device=device,
    )


def predict_texts(classifier: Classifier, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
    """The label and the probability of every label for each text, in the input order. Texts are
    batched by length, so each batch pads to similar lengths (several times less padding)."""
    import torch

    id2label = classifier.network.config.id2label
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    results: list[dict[str, Any]] = [{}] * len(texts)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = classifier.tokenizer(
            [texts[index] for index in chosen],
            truncation=True,
            padding=True,
            max_length=classifier.max_length,
            return_tensors="pt",
        ).to(classifier.device)
        with torch.inference_mode():
            probabilities = classifier.network(**batch).logits.float().softmax(dim=-1).cpu().tolist()
        for index, row in zip(chosen, probabilities, strict=True):
            scores = {id2label[number]: round(value, 6) for number, value in enumerate(row)}
            results[index] = {"label": max(scores, key=scores.get), "probabilities": scores}
    return results


def predictions(model: str, texts: list[str], batch_size: int, tracking_uri: str | None = None) -> list[str]:
    """Labels predicted by a model folder or MLflow model URI (in `tracking_uri`'s store)."""
    return [row["label"] for row in predict_texts(load_classifier(model, tracking_uri), texts, batch_size)]
