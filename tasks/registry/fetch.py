"""A local folder for a model location: a folder as it is, or a run or registry URI downloaded from
MLflow into a cache under the home folder, keyed by store and version (a version's files never
change), reused by later calls and never left in /tmp."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from tasks.core.errors import ModelNotFoundError, TuneloopError, first_line
from tasks.core.home import tuneloop_home
from tasks.model.predict import MLFLOW_SCHEMES
from tasks.registry.versions import resolve_model_uri
from tasks.tracking.store import absent_store, configure_tracking, damaged_store, mlflow_client

CACHE_FOLDER = "model-cache"


def short_hash(text: str) -> str:
    """A short stable name for a store or an artifact URI in the cache's folder names."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def source_and_key(location: str, store: str) -> tuple[str, str, str]:
    """(the artifact URI to download, the cache folder below the cache, the version in words) of an
    MLflow location. A
    registry alias is resolved to its version first, so moving `@champion` fetches the new one. A
    logged model's id (`models:/m-<hex>`) names its files directly."""
    if re.fullmatch(r"models:/m-[0-9a-f]+/?", location):  # an MLflow 3 logged model, by its id
        model_id = location.removeprefix("models:/").strip("/")
        source = mlflow_client(store).get_logged_model(model_id).artifact_location
        return source, f"{short_hash(store)}/logged/{model_id}", model_id
    if location.startswith("models:/"):
        name, version, source = resolve_model_uri(location, store)
        return source, f"{short_hash(store)}/models/{name}/{version}", version
    if location.startswith("runs:/"):
        path = location.removeprefix("runs:/").strip("/")
        run_id, _, name = path.partition("/")
        logged = run_logged_model(store, run_id, name)
        if logged is not None:  # MLflow 3: the run's model is a logged model, not an artifact of the run
            return logged.artifact_location, f"{short_hash(store)}/logged/{logged.model_id}", f"run {run_id}"
        return location, f"{short_hash(store)}/runs/{path}", f"run {run_id}"
    return location, f"{short_hash(store)}/artifacts/{short_hash(location)}", location


def run_logged_model(store: str, run_id: str, name: str) -> Any:
    """The newest READY logged model named `name` (tuneloop's: `model`) that run `run_id` logged, or
    None (`runs:/<run_id>/<path>` then names an artifact folder of the run, as in MLflow 2)."""
    if not (re.fullmatch(r"[\w-]+", run_id) and re.fullmatch(r"[\w.-]+", name)):  # quoted into a filter below
        return None
    client = mlflow_client(store)
    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        [experiment], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'", max_results=50
    )
    ready = [model for model in found if str(model.status) == "READY"]
    return max(ready, key=lambda model: model.creation_timestamp, default=None)


def download(source: str, store: str, folder: Path) -> Path:
    """Download an artifact folder to `folder` all at once: into a partial folder beside it, then
    renamed, so an interrupted download never looks complete and concurrent ones do not collide."""
    import mlflow

    partial = folder.parent / f".partial-{uuid.uuid4().hex}"
    partial.mkdir(parents=True)
    try:
        fetched = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=store, dst_path=str(partial))
        )
        try:
            os.replace(fetched, folder)
        except OSError:  # another process finished the same download first: use its copy
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def fetch_model(location: str, tracking_uri: str | None = None) -> Path:
    """A local folder for `location`: the path itself (checked when the model loads), or an MLflow
    artifact URI from `tracking_uri` (default: the configured store), downloaded once into the cache."""
    return fetch_version(location, tracking_uri)[0]


def fetch_version(location: str, tracking_uri: str | None = None) -> tuple[Path, str]:
    """fetch_model's folder and which version it is: the registry's version number, a logged
    model's id, `run <id>`, or `local` for a folder."""
    if not location.startswith(MLFLOW_SCHEMES):
        return Path(location).expanduser(), "local"
    store = tracking_uri or configure_tracking()
    absent = absent_store(store, "is tracked or registered")
    if absent:
        raise ModelNotFoundError(f"Cannot fetch model {location}. {absent}")
    try:
        source, key, version = source_and_key(location, store)
        folder = tuneloop_home() / CACHE_FOLDER / key
        return (folder if folder.is_dir() else download(source, store, folder)), version
    except TuneloopError:
        raise
    except Exception as error:  # MLflow raises several types for missing runs, models, artifacts
        fix = damaged_store(store, error) or "Check the run id or model name, and MLFLOW_TRACKING_URI."
        raise ModelNotFoundError(f"Cannot fetch model {location} from MLflow: {first_line(error)}. {fix}") from None


@task(name="fetch_registered_model")
def fetch_registered_model(location: str) -> tuple[Path, str]:
    """The model to score with, as a local folder (cached by version), and its version."""
    folder, version = fetch_version(location)
    get_run_logger().info("Model %s: version %s in %s", location, version, folder)
    return folder, version
