"""Tracking in MLflow: the store and experiment, and the names and tags every run shares (the
flattened config as parameters, namespaced metrics, provenance tags). What a training logs is in
`tasks/tracking/training.py`, what a sweep logs in `tasks/tracking/sweep.py`; the one place that makes an
MlflowClient is `mlflow_client` here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.tracking import TrackingConfig
from tasks.core.errors import TrackingError, TrackingTimeout, first_line
from tasks.core.home import tuneloop_home
from tasks.core.locks import creation_lock
from tasks.core.secrets import mask_credentials, mask_logs
from tasks.model.refit import RefitReport

# MLflow 3's experiment kind: the UI opens an experiment without one in GenAI mode (traces, evaluations).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}


class TrackingTarget(BaseModel):
    """A reachable tracking store and the experiment's id in it."""

    uri: str
    experiment: str
    experiment_id: str


class TrackedRun(BaseModel):
    """The MLflow run that holds one training."""

    run_id: str
    experiment: str
    experiment_id: str
    uri: str
    link: str
    name: str = ""
    model_id: str | None = None  # the run's logged MLflow Model (None when tracking.log_model is off)
    baseline_run_id: str | None = None  # the baseline's child run, and its logged MLflow Model
    baseline_model_id: str | None = None


def mlflow_client(uri: str) -> Any:
    """The MLflow client of a store, whose model registry is the same store (named explicitly:
    MLflow's default registry URI is process-global)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


TRACKING_SCHEMES = ("http://", "https://", "sqlite:", "postgresql", "mysql", "mssql", "databricks", "file:")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store in the tuneloop home folder. A value that is no
    tracking URI (MLflow would take it for a folder of its retired file store) is a ConfigError."""
    from tasks.core.errors import ConfigError

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{tuneloop_home() / 'mlflow.db'}"
    if not uri.startswith(TRACKING_SCHEMES):
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={masked_url(uri)!r} is not a tracking URI: set it to a tracking server "
            "(http://host:5000) or a database (sqlite:///path/mlflow.db), or unset it to use the home "
            "folder's mlflow.db."
        )
    return uri


def damaged_store(uri: str, error: BaseException) -> str | None:
    """The fix when `error` says the store's SQLite file is not a (sound) database, else None."""
    from tasks.core.locks import sqlite_file

    path = sqlite_file(uri)
    text = str(error)
    if path is None or not ("file is not a database" in text or "malformed" in text):
        return None
    return (
        f"The SQLite file {path} is damaged: restore it from a backup, or move it aside (tuneloop then starts "
        "a new, empty store there); nothing was written to it."
    )


def absent_store(uri: str, what: str) -> str | None:
    """The message when `uri` is a SQLite store that does not exist yet (so it holds nothing: opening
    it would only create an empty one), else None. `what`: what the command looked for."""
    from tasks.core.locks import sqlite_file

    path = sqlite_file(uri)
    if path is None or path.exists():
        return None
    return (
        f"Nothing {what} yet: the tracking store {path} does not exist. Train first (tuneloop run), or point "
        "MLFLOW_TRACKING_URI (or TUNELOOP_HOME) at the store that holds them."
    )


def masked_url(url: str) -> str:
    """A URL for messages and logs, its password (if any) as ***: `postgresql://user:***@host/db`."""
    return mask_credentials(url)


def configure_tracking() -> str:
    """The store's URI, with MLflow set to fail fast (seconds, not minutes) when a server does not answer.
    MLflow's global tracking URI is left alone: every call names the store explicitly."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in logs or `predict`
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # tuneloop logs the run's link itself
    mask_logs()  # the URI may hold a password, and library errors quote it
    uri = tracking_uri()
    check_answers(uri)
    return uri


ANSWER_SECONDS = 5.0  # how long a tracking server may take to answer its health check


def check_answers(uri: str) -> None:
    """Raise a TrackingError when a tracking server accepts connections but does not answer one
    request (its /health) within ANSWER_SECONDS: MLflow's own timeouts and retries would take minutes
    to say so. A refused connection or an unknown host is left to MLflow, which says that at once."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=ANSWER_SECONDS)
    except requests.Timeout:
        raise TrackingTimeout(
            f"MLflow tracking server {masked_url(uri)} did not answer within {ANSWER_SECONDS:g} s. Check that it "
            "runs and is not stuck (make status; restart it with make down and make up), fix MLFLOW_TRACKING_URI, "
            "or unset it to track in the local SQLite store."
        ) from None
    except requests.RequestException:
        return


def ensure_experiment(name: str) -> TrackingTarget:
    """The experiment's id, creating it (artifacts beside the SQLite store) when it is new. Its kind
    is model training, so MLflow 3's UI opens it on runs and models, not on GenAI traces; an
    experiment whose kind someone already chose keeps it."""
    uri = configure_tracking()
    try:
        client = mlflow_client(uri)
        with creation_lock(uri):  # a fresh SQLite store's schema, and the experiment, made once
            experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = (tuneloop_home() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
            with creation_lock(uri):
                found = client.get_experiment_by_name(name)  # another process may have just made it
                experiment_id = (
                    found.experiment_id
                    if found
                    else client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
                )
            return TrackingTarget(uri=uri, experiment=name, experiment_id=experiment_id)
        if EXPERIMENT_KIND not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, EXPERIMENT_TAGS[EXPERIMENT_KIND])
        return TrackingTarget(uri=uri, experiment=name, experiment_id=experiment.experiment_id)
    except Exception as error:  # connection errors, refused requests, a broken database
        fix = damaged_store(uri, error) or (
            "Start the server (make up), fix MLFLOW_TRACKING_URI, or unset it to track in the local SQLite store."
        )
        raise TrackingError(
            f"MLflow tracking store {masked_url(uri)} cannot be used: {first_line(error)}. {fix}"
        ) from None


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as `section.field` -> text: identical keys in every run, for MLflow's compare view."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def write_config(config: BaseModel, path: Path) -> Path:
    """The full resolved config as YAML (logged beside the flattened parameters: one file to rerun from)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


def git_commit() -> str | None:
    """The project's git commit, when it runs from a checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def metric_name(*parts: str) -> str:
    """A metric key MLflow accepts (letters, digits, _ - . / and spaces)."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- ]+", "_", part) for part in parts)


def epoch_metrics(history: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """(key, value, step=epoch) for the epoch's mean training loss and every validation score of every
    epoch (a live run also has `train/loss` every N optimizer steps: tasks/model/progress.py)."""
    rows = []
    for record in history:
        if record["train_loss"] is not None:
            rows.append(("train/epoch_loss", record["train_loss"], record["epoch"]))
        rows += [(metric_name("val", key), value, record["epoch"]) for key, value in record["val"].items()]
    return rows


def live_run_epochs(
    client: Any, run_id: str, rows: list[tuple[str, float, int]], unsent: list[tuple[str, float, int, int]], stamp: int
) -> list[Any]:
    """The epoch metrics a live run still needs at its end, as Metrics: what its stream could not
    send (`unsent`, with their own timestamps), and the rows (key, value, step = epoch: epoch_metrics
    of a history, which a resume from checkpoint keeps) that the run holds neither sent nor queued
    there, stamped `stamp`: a run continued from a checkpoint (a rerun of a killed run, a retried
    trial) streams only the epochs after it, and a process killed right after an epoch's checkpoint
    may not have sent that epoch."""
    from mlflow.entities import Metric

    queued = {(key, step) for key, _, step, _ in unsent}
    held = {key: {metric.step for metric in client.get_metric_history(run_id, key)} for key in {row[0] for row in rows}}
    return [Metric(key, value, sent_at, step) for key, value, step, sent_at in unsent] + [
        Metric(key, value, stamp, step)
        for key, value, step in rows
        if step not in held[key] and (key, step) not in queued
    ]


def refit_tags(refit: RefitReport) -> dict[str, str]:
    """Tags that say whether the final model was refit on train + validation, and why."""
    return {"refit": str(refit.refit).lower(), "refit_reason": refit.reason[:5000]}


def refit_metrics(refit: RefitReport) -> list[tuple[str, float, int]]:
    """(key, value, step) of a refit: rows, epochs and steps (step 0), each epoch's mean training loss."""
    if not refit.refit:
        return []
    rows = [("refit/rows", float(refit.rows), 0), ("refit/epochs", float(refit.epochs), 0)]
    rows.append(("refit/steps", float(refit.steps), 0))
    return rows + [("refit/epoch_loss", loss, epoch) for epoch, loss in enumerate(refit.epoch_losses, start=1)]


def best_epoch_metrics(history: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """`best/<score>` of the epoch with the highest validation `metric` among `history` (pass the
    chosen epoch's record alone for its scores): the same keys on training runs and sweep trials,
    for the leaderboard and MLflow's compare view."""
    scored = [record for record in history if metric in record["val"]]
    if not scored:
        return {}
    best = max(scored, key=lambda record: record["val"][metric])
    return {metric_name("best", key): float(value) for key, value in best["val"].items()}


def final_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """Scores of the final model: test/* overall and per class, val/<class>/* per class. (Overall
    val/* scores are the per-epoch series; the final model is the best epoch's.)"""
    scores: dict[str, float] = {}
    for split in ("val", "test"):
        for key, value in evaluation[split].items():
            if key == "per_class":
                for label, values in value.items():
                    scores.update(
                        {
                            metric_name(split, label, name): float(number)
                            for name, number in values.items()
                            if name != "support"
                        }
                    )
            elif split == "test":
                scores[metric_name(split, key)] = float(value)
    return scores


def tracked_run(target: TrackingTarget, run_id: str, model_id: str | None = None, name: str = "") -> TrackedRun:
    """Our record of one training's MLflow run."""
    return TrackedRun(
        run_id=run_id,
        name=name,
        experiment=target.experiment,
        experiment_id=target.experiment_id,
        uri=target.uri,
        link=run_link(target, run_id),
        model_id=model_id,
    )


def readable_run_name(flow: str, data_path: str, base_model: str, when: datetime | None = None) -> str:
    """What ran on what, and when, for MLflow's run list: `train-banking-all-MiniLM-L6-v2-1207-1320`
    (the flow, the data file's stem, the base model's last path part, month, day, hour, minute)."""
    stamp = (when or datetime.now()).strftime("%m%d-%H%M")
    parts = [flow, Path(data_path).stem, Path(base_model.rstrip("/")).name, stamp]
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", part).strip("_-") or "x" for part in parts)


# Where `make mlflow-ui` serves a local (SQLite) store; links to local runs point there.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_address(uri: str) -> str:
    """The MLflow UI that shows a store: the tracking server itself, or `make mlflow-ui` for a local
    store (TUNELOOP_MLFLOW_UI overrides it). No password: links are logged and stored as tags."""
    url = masked_url(uri)
    if url.startswith(("http://", "https://")):
        return url.rstrip("/")
    return os.environ.get("TUNELOOP_MLFLOW_UI", LOCAL_UI).rstrip("/")


def run_link(target: TrackingTarget, run_id: str) -> str:
    """The URL of the run's page in the MLflow UI (for a local store, open it with `make mlflow-ui`)."""
    # MLflow 3's UI shows a page in GenAI or model-training mode by this query parameter.
    return f"{ui_address(target.uri)}/#/experiments/{target.experiment_id}/runs/{run_id}?workflowType=machine_learning"


def version_link(uri: str, name: str, version: str) -> str:
    """The URL of a registered model version's page in the MLflow UI."""
    return f"{ui_address(uri)}/#/models/{name}/versions/{version}"


def dataset_inputs(datasets: dict[str, dict[str, Any]]) -> list[Any]:
    """The splits as MLflow dataset inputs, named by our own full-content hash (not MLflow's sample hash)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "source can be interpreted in multiple ways": a local file
        for context, ref in datasets.items():
            source = resolve_dataset_source(str(Path(ref["path"]).resolve()))
            # MetaDataset is MLflow's own concrete class; its stub marks `profile` abstract
            dataset = MetaDataset(source=source, name=context, digest=ref["sha256"][:16])  # type: ignore[abstract]
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def upload(client: Any, run_id: str, artifacts: dict[str, Path]) -> None:
    """Artifact folder in the run -> local file or folder; missing ones are skipped."""
    for artifact_path, path in artifacts.items():
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            client.log_artifact(run_id, str(path), artifact_path or None)


def run_tags(dataset_sha256: str, extra: dict[str, str]) -> dict[str, str]:
    """Tags that say where a run came from: data hash, code version, Prefect flow run and deployment."""
    from prefect.runtime import deployment, flow_run

    tags = {
        "dataset_sha256": dataset_sha256,
        "prefect.flow_run_id": str(flow_run.id or ""),
        "prefect.flow_run_name": str(flow_run.name or ""),
        "prefect.deployment": str(deployment.name or ""),
        **extra,
    }
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: a store that refused or failed may be restarting; one that did not answer
    within seconds is not retried (the user would wait for nothing)."""
    try:
        state.result()
    except TrackingTimeout:
        return False
    except Exception:
        return True
    return False


@task(name="check_tracking", retries=2, retry_delay_seconds=3, retry_condition_fn=worth_retrying)
def check_tracking(config: TrackingConfig) -> TrackingTarget:
    """Reach the tracking store and create the experiment before any training starts."""
    target = ensure_experiment(config.experiment)
    get_run_logger().info("Tracking to %s, experiment %s", masked_url(target.uri), target.experiment)
    return target
