"""The fine-tuned model as an MLflow Model: a transformers text-classification pipeline (merged
weights, tokenizer, label map) in MLflow's transformers flavor, with its signature, an input example
and pinned pip requirements (no dependency inference: logging stays fast and offline), and
`tuneloop.json` beside it. Logged as an MLflow 3 logged model of the run, so the registry, pyfunc
and `mlflow models serve` all use it."""

from __future__ import annotations

import contextlib
import importlib.metadata
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.core.home import environment
from tasks.data.load import DatasetRef
from tasks.model.predict import MODEL_INFO_FILE, PIPELINE_FILE, model_info
from tasks.tracking.store import mlflow_client

# What serving the model needs, pinned to the versions that trained it.
SERVING_PACKAGES = ("mlflow", "transformers", "torch", "tokenizers", "safetensors")
BASELINE_PACKAGES = ("mlflow", "scikit-learn", "pandas")
LOGGED_MODEL_NAME = "model"


def model_signature() -> Any:
    """The model's signature: a text in; a label and its score out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")])
    )


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """A library's logger at ERROR level for a block."""
    import logging

    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def pip_requirements(packages: tuple[str, ...] = SERVING_PACKAGES) -> list[str]:
    """The serving packages (a fine-tune's by default) at the versions installed here."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


def save_mlflow_model(model_dir: Path, folder: Path, example: str) -> Path:
    """Write the saved model (`model_dir`) as an MLflow transformers-flavor model to `folder`."""
    import mlflow.transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from tasks.core.quiet import quiet_libraries

    quiet_libraries()
    network = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    classifier = pipeline("text-classification", model=network, tokenizer=tokenizer, device="cpu")
    shutil.rmtree(folder, ignore_errors=True)
    # The signature is known (text in; label and score out), so MLflow need not run the model to infer
    # it; its warnings about a Hub model card and a license do not apply to a local fine-tune.
    with quiet_logger("mlflow.transformers"):
        mlflow.transformers.save_model(
            classifier,
            path=str(folder),
            task="text-classification",
            signature=model_signature(),
            input_example=[example],
            pip_requirements=pip_requirements(),
        )
    shutil.copy2(model_dir / MODEL_INFO_FILE, folder / MODEL_INFO_FILE)
    return folder


def log_logged_model(uri: str, experiment_id: str, run_id: str, folder: Path, tags: dict[str, str]) -> str:
    """`folder` (an MLflow Model) as a logged model of the run: created, uploaded, marked READY; its id."""
    client = mlflow_client(uri)
    logged = client.create_logged_model(
        experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, tags=tags, model_type="text-classification"
    )
    try:
        client.log_model_artifacts(logged.model_id, str(folder))
    except Exception:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    from mlflow.entities import LoggedModelOutput

    client.log_outputs(run_id, [LoggedModelOutput(model_id=logged.model_id, step=0)])  # the run's page lists it
    return logged.model_id


def save_baseline_mlflow_model(model_dir: Path, folder: Path, example: str) -> Path:
    """Write a saved baseline (`model_dir`: `model.pkl` and `tuneloop.json`) as an MLflow scikit-learn
    flavor model whose pyfunc answers like the fine-tune's (label and score: baseline_pyfunc.py)."""
    import pickle

    import mlflow.sklearn
    from mlflow.models import Model

    from tasks.tracking import baseline_pyfunc

    with (model_dir / PIPELINE_FILE).open("rb") as handle:
        pipeline = pickle.load(handle)  # written by this run
    shutil.rmtree(folder, ignore_errors=True)
    with quiet_logger("mlflow.sklearn"):  # its warning about pickle files: ours, read by our own loader
        mlflow.sklearn.save_model(
            pipeline,
            path=str(folder),
            serialization_format="pickle",
            signature=model_signature(),
            input_example=[example],
            pip_requirements=pip_requirements(BASELINE_PACKAGES),
            code_paths=[baseline_pyfunc.__file__],
        )
    model = Model.load(str(folder))
    model.flavors["python_function"]["loader_module"] = "baseline_pyfunc"  # label and score, not bare labels
    model.flavors["python_function"].pop("predict_fn", None)
    model.save(str(folder / "MLmodel"))
    shutil.copy2(model_dir / MODEL_INFO_FILE, folder / MODEL_INFO_FILE)
    return folder


def log_baseline_model(uri: str, experiment_id: str, run_id: str, model_dir: Path, example: str) -> str:
    """Package a saved baseline beside it (`mlflow-model/`) and log it as the run's model; its id."""
    folder = save_baseline_mlflow_model(model_dir, model_dir.parent / "mlflow-model", example)
    return log_logged_model(uri, experiment_id, run_id, folder, {"model_family": "baseline"})


def log_model(uri: str, experiment_id: str, run_id: str, model_dir: Path, example: str) -> str:
    """Package the saved model beside it (`mlflow-model/`) and log it as the run's model; its id."""
    folder = save_mlflow_model(model_dir, model_dir.parent / "mlflow-model", example)
    tags = {"base_model": model_info(model_dir)["base_model"], "model_family": "finetune"}
    return log_logged_model(uri, experiment_id, run_id, folder, tags)


def example_text(validation: DatasetRef) -> str:
    """The model's input example: the first validation text."""
    import pandas as pd

    return str(pd.read_parquet(validation.path, columns=["text"])["text"].iloc[0])


@contextlib.contextmanager
def global_store(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry store set to `uri` for a block (through the
    environment, which MLflow reads on each call, so nothing stays set after it). Needed by the few
    calls that ignore the client's store: a local registry resolves a logged model through the global
    tracking store when it creates a version."""
    with environment(dict.fromkeys(("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"), uri)):
        yield
