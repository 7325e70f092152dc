"""Load a saved tuneloop model folder and label texts (a model in MLflow is fetched to a folder first:
tasks/registry/fetch.py). Two families answer the same way: a fine-tuned transformer, and the TF-IDF
baseline (a pickled scikit-learn pipeline, `model.pkl`); `tuneloop.json` says which."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import ModelNotFoundError, first_line
from tasks.core.quiet import quiet_libraries

MODEL_INFO_FILE = "tuneloop.json"
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")  # locations fetched from MLflow first
PIPELINE_FILE = "model.pkl"  # the baseline's pipeline; MLflow's scikit-learn flavor uses the same name
BASELINE_NAME = "tfidf-logistic-regression"


@dataclass
class Classifier:
    """A loaded model: a network with its tokenizer and sequence length, or a baseline `pipeline`."""

    network: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    device: str
    pipeline: Any = None


def model_folder(location: str | Path) -> Path:
    """The folder of a saved tuneloop model, or a ModelNotFoundError saying what to pass."""
    folder = Path(location).expanduser()
    if not (folder / MODEL_INFO_FILE).is_file():
        raise ModelNotFoundError(
            f"No tuneloop model at {location}. Pass the `model` folder of a run "
            "(.tuneloop/runs/<run>/model) or an MLflow URI such as models:/tuneloop-classifier@champion."
        )
    return folder


def model_info(folder: Path) -> dict[str, Any]:
    """A saved model's `tuneloop.json`: labels, sequence length, base model, best epoch."""
    return json.loads((folder / MODEL_INFO_FILE).read_text(encoding="utf-8"))


def weights_and_tokenizer(folder: Path) -> tuple[Path, Path]:
    """Where the weights and the tokenizer are: in an MLflow transformers-flavor model (an `MLmodel`
    file), under `model/` and `components/tokenizer/`; in a run's plain model folder, in the folder."""
    if (folder / "MLmodel").is_file():
        return folder / "model", folder / "components" / "tokenizer"
    return folder, folder


def load_classifier(location: str | Path) -> Classifier:
    """Load a saved model folder for inference, on the GPU when there is one; offline, local files only.
    A baseline loads without torch or transformers."""
    folder = model_folder(location)
    info = model_info(folder)
    if info.get("family") == "baseline":
        return load_baseline(folder, info)
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_libraries()
    weights, vocabulary = weights_and_tokenizer(folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        network = (
            AutoModelForSequenceClassification.from_pretrained(
                str(weights), use_safetensors=True, local_files_only=True
            )
            .to(device)
            .eval()
        )
        tokenizer = AutoTokenizer.from_pretrained(str(vocabulary), local_files_only=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # missing, cut off or foreign weights
        raise ModelNotFoundError(
            f"The model in {folder} cannot be loaded ({first_line(error)}): its files are missing or damaged. "
            "Fetch it again (remove it from the model cache, or copy the run's model folder again) or "
            "train a new one."
        ) from None
    return Classifier(
        network=network,
        tokenizer=tokenizer,
        labels=list(info["labels"]),
        max_length=int(info["max_length"]),
        device=device,
    )


def load_baseline(folder: Path, info: dict[str, Any]) -> Classifier:
    """A saved TF-IDF baseline: its pickled scikit-learn pipeline (trusted: written by tuneloop)."""
    import pickle

    try:
        with (folder / PIPELINE_FILE).open("rb") as handle:
            pipeline = pickle.load(handle)  # our own model file, like any pickled sklearn model
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ModelNotFoundError(
            f"The baseline model in {folder} cannot be loaded ({first_line(error)}): its files are missing or "
            "damaged, or scikit-learn differs from the one that saved it. Fetch it again or train a new one."
        ) from None
    return Classifier(
        network=None, tokenizer=None, labels=list(info["labels"]), max_length=0, device="cpu", pipeline=pipeline
    )


def predict_baseline(classifier: Classifier, texts: list[str]) -> list[dict[str, Any]]:
    """predict_texts for a baseline: the pipeline's class probabilities."""
    classes = [str(name) for name in classifier.pipeline.classes_]
    results: list[dict[str, Any]] = []
    for row in classifier.pipeline.predict_proba(texts).tolist():
        scores: dict[str, float] = {label: round(value, 6) for label, value in zip(classes, row, strict=True)}
        results.append({"label": max(scores, key=lambda label: scores[label]), "probabilities": scores})
    return results


def predict_texts(classifier: Classifier, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
    """The label and the probability of every label for each text, in the input order. Texts are
    batched by length, so each batch pads to similar lengths (several times less padding)."""
    if classifier.pipeline is not None:
        return predict_baseline(classifier, texts)
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
            results[index] = {"label": max(scores, key=lambda label: scores[label]), "probabilities": scores}
    return results


def predictions(model: str | Path, texts: list[str], batch_size: int) -> list[str]:
    """Labels predicted by a saved model folder."""
    return [row["label"] for row in predict_texts(load_classifier(model), texts, batch_size)]
