"""Everything tuneloop tells MLflow. Only this module talks to MLflow: one run per training, with
the flattened config as parameters (the same keys in every run), per-epoch metrics, test metrics,
pictures, reports, the split hashes as dataset inputs, and the model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from tasks.baseline import BaselineReport, baseline_verdict, beats_baseline
from tasks.errors import TrackingError, first_line
from tasks.evaluate import EvalReport
from tasks.finetune import TrainedModelRef
from tasks.select import SelectionReport, selection_table
from tasks.split import SplitReport
from tasks.validate import DataReport
from tasks.workspace import tuneloop_home


class TrackingConfig(BaseModel):
    """Where runs are grouped in MLflow. The server itself comes from MLFLOW_TRACKING_URI."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field("tuneloop", min_length=1, max_length=200, description="MLflow experiment name.")
    run_name: str | None = Field(
        None, max_length=200, description="MLflow run name; unset: the Prefect flow run's name."
    )
    log_model: bool = Field(True, description="Upload the fine-tuned model folder as the run's `model` artifact.")


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


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store in the tuneloop home folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tuneloop_home() / 'mlflow.db'}"


def configure_tracking() -> str:
    """The store's URI, with MLflow set to fail fast (seconds, not minutes) when a server does not answer.
    MLflow's global tracking URI is left alone: every call names the store explicitly."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    return tracking_uri()


def ensure_experiment(name: str) -> TrackingTarget:
    """The experiment's id, creating it (artifacts beside the SQLite store) when it is new."""
    import mlflow

    uri = configure_tracking()
    client = mlflow.MlflowClient(uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return TrackingTarget(uri=uri, experiment=name, experiment_id=experiment.experiment_id)
        location = (tuneloop_home() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        return TrackingTarget(
            uri=uri, experiment=name, experiment_id=client.create_experiment(name, artifact_location=location)
        )
    except Exception as error:  # connection errors, refused requests, a broken database
        reason = first_line(error)
        raise TrackingError(
            f"MLflow tracking store {uri} cannot be used: {reason}. Start the server "
            "(make up), fix MLFLOW_TRACKING_URI, or unset it to track in the local SQLite "
            "store."
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
    """(key, value, step=epoch) for the training loss and every validation score of every epoch."""
    rows = []
    for record in history:
        if record["train_loss"] is not None:
            rows.append(("train/loss", record["train_loss"], record["epoch"]))
        rows += [(metric_name("val", key), value, record["epoch"]) for key, value in record["val"].items()]
    return rows


def best_epoch_metrics(history: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """`best/<score>` of the epoch with the highest validation `metric`: the same keys on training
    runs and sweep trials, for the leaderboard and MLflow's compare view."""
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


def run_link(target: TrackingTarget, run_id: str) -> str:
    """Where a person looks at the run: the server's page, or the command that opens the local UI."""
    if target.uri.startswith(("http://", "https://")):
        return f"{target.uri.rstrip('/')}/#/experiments/{target.experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {target.uri}  (then experiment {target.experiment}, run {run_id})"


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
            dataset = MetaDataset(source=source, name=context, digest=ref["sha256"][:16])
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def upload(client: Any, run_id: str, artifacts: dict[str, Path]) -> None:
    """Artifact folder in the run -> local file or folder; missing ones are skipped."""
    for artifact_path, path in artifacts.items():
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            client.log_artifact(run_id, str(path), artifact_path or None)


def log_final_model(target: TrackingTarget, run_id: str, evaluation: EvalReport, model_path: str) -> None:
    """A sweep's best trial, evaluated at the end: its test scores, evaluation files and model, added
    to the trial's run so that it can be registered like a training run."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(target.uri)
    stamp = int(time.time() * 1000)
    scores = final_metrics(evaluation.model_dump())
    client.log_batch(run_id, metrics=[Metric(key, value, stamp, 0) for key, value in scores.items()])
    upload(
        client,
        run_id,
        {
            "evaluation": Path(evaluation.confusion_matrix_path),
            "evaluation/report": Path(evaluation.report_path),
            "evaluation/predictions": Path(evaluation.predictions_path),
            "model": Path(model_path),
        },
    )
    client.set_tag(run_id, "final_model", "True")


def log_training(
    target: TrackingTarget,
    run_name: str | None,
    params: dict[str, str],
    tags: dict[str, str],
    history: list[dict[str, Any]],
    best_epoch: int,
    evaluation: dict[str, Any],
    datasets: dict[str, dict[str, Any]],
    artifacts: dict[str, Path],
    metric: str = "f1_macro",
) -> TrackedRun:
    """Create the run and log everything in a few batched calls."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(target.uri)
    try:
        run = client.create_run(target.experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        stamp = int(run.info.start_time)
        metrics = [Metric(key, value, stamp, step) for key, value, step in epoch_metrics(history)]
        metrics += [Metric(key, value, stamp, 0) for key, value in final_metrics(evaluation).items()]
        metrics.append(Metric("best_epoch", float(best_epoch), stamp, 0))
        chosen = [record for record in history if record["epoch"] == best_epoch]
        metrics += [Metric(key, value, stamp, 0) for key, value in best_epoch_metrics(chosen, metric).items()]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag("mlflow.runName", run_name)] if run_name else [],
        )
        client.log_inputs(run_id, datasets=dataset_inputs(datasets))
        upload(client, run_id, artifacts)
        client.set_terminated(run_id, "FINISHED")
    except TrackingError:
        raise
    except Exception as error:
        reason = first_line(error)
        raise TrackingError(
            f"Logging to MLflow at {target.uri} failed: {reason}. The trained model is kept in the run folder."
        ) from None
    return TrackedRun(
        run_id=run_id,
        experiment=target.experiment,
        experiment_id=target.experiment_id,
        uri=target.uri,
        link=run_link(target, run_id),
    )


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


@task(name="check_tracking", retries=2, retry_delay_seconds=3)
def check_tracking(config: TrackingConfig) -> TrackingTarget:
    """Reach the tracking store and create the experiment before any training starts."""
    target = ensure_experiment(config.experiment)
    get_run_logger().info("Tracking to %s, experiment %s", target.uri, target.experiment)
    return target


def log_candidates(
    target: TrackingTarget, parent_run_id: str, rows: list[dict[str, Any]], metric: str, baseline: BaselineReport
) -> None:
    """One child run per screened candidate (`rows` of the selection table) and one for the baseline,
    under the training's run (`parent_run_id` is passed explicitly: MLflow's active run is per thread)."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(target.uri)
    for row in rows:
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "candidate": row["candidate"],
            "license": row["license"],
            "parameters": str(row["parameters"]),
            "memory_gb_full": str(row["memory_gb_full"]),
            "memory_gb_lora": str(row["memory_gb_lora"]),
            "accepted": str(row["accepted"]),
            "chosen": str(row["chosen"]),
            "reasons": row["reasons"][:5000],
            "kind": "candidate",
        }
        child = client.create_run(target.experiment_id, run_name=f"candidate {row['candidate']}", tags=tags)
        if row["probe_score"] is not None:
            client.log_batch(
                child.info.run_id,
                metrics=[Metric(metric_name("probe", metric), row["probe_score"], child.info.start_time, 0)],
            )
        client.set_terminated(child.info.run_id, "FINISHED")
    child = client.create_run(
        target.experiment_id,
        run_name=f"baseline {baseline.name}",
        tags={"mlflow.parentRunId": parent_run_id, "candidate": baseline.name, "kind": "baseline"},
    )
    scores = final_metrics({"val": baseline.val.model_dump(), "test": baseline.test.model_dump()})
    scores.update(
        {metric_name("val", key): value for key, value in baseline.val.model_dump().items() if key != "per_class"}
    )
    client.log_batch(
        child.info.run_id, metrics=[Metric(key, value, child.info.start_time, 0) for key, value in scores.items()]
    )
    client.set_terminated(child.info.run_id, "FINISHED")


def run_artifacts(
    data: DataReport, splits: SplitReport, trained: TrainedModelRef, evaluation: EvalReport
) -> dict[str, Path]:
    """Artifact folder in the run -> local file or folder."""
    validation = Path(data.data.folder)
    return {
        "evaluation": Path(evaluation.confusion_matrix_path),
        "evaluation/report": Path(evaluation.report_path),
        "evaluation/predictions": Path(evaluation.predictions_path),
        "validation": validation / "summary.json",
        "validation/data_docs": validation / "data_docs",
        "splits": Path(splits.summary_path),
        "model": Path(trained.path),
    }


def training_markdown(trained: TrainedModelRef, scores: dict[str, Any], verdict: str, tracked: TrackedRun) -> str:
    """The Prefect artifact of a training: scores on validation and test, the baseline verdict, the run link."""
    test = scores["test"]
    return "\n".join(
        [
            f"# Fine-tuning result: test f1_macro {test['f1_macro']:.4f}",
            "",
            f"Base model `{trained.base_model}` ({trained.method}) on {trained.device} ({trained.precision}), "
            f"best epoch {trained.best_epoch} of {len(trained.history)}.",
            "",
            verdict,
            "",
            "| metric | validation | test |",
            "|---|---|---|",
            *(f"| {key} | {scores['val'][key]:.4f} | {test[key]:.4f} |" for key in test if key != "per_class"),
            "",
            f"MLflow run `{tracked.run_id}` in experiment `{tracked.experiment}`: {tracked.link}",
            "",
            "Confusion matrix: artifact `evaluation/confusion_matrix.png` of that run.",
        ]
    )


@task(name="log_run", retries=2, retry_delay_seconds=5)
def log_run(
    target: TrackingTarget,
    config: BaseModel,
    data: DataReport,
    splits: SplitReport,
    trained: TrainedModelRef,
    evaluation: EvalReport,
    selection: SelectionReport,
    baseline: BaselineReport,
) -> TrackedRun:
    """Log one training to MLflow (parameters, per-epoch and test metrics, inputs, artifacts, model),
    a child run per base-model candidate and one for the baseline; link the run from a Prefect artifact."""
    from prefect.runtime import flow_run

    tracking: TrackingConfig = config.tracking  # type: ignore[attr-defined]
    artifacts = run_artifacts(data, splits, trained, evaluation)
    if not tracking.log_model:
        artifacts.pop("model")
    tags = run_tags(
        data.data.dataset_sha256,
        {
            "base_model": trained.base_model,
            "method": trained.method,
            "device": trained.device,
            "precision": trained.precision,
            "beats_baseline": str(beats_baseline(evaluation.val, baseline, selection.metric)),
            "kind": "training",
        },
    )
    scores = evaluation.model_dump()
    verdict = baseline_verdict(evaluation.val, baseline, selection.metric)
    table = Path(trained.path).parent / "selection" / "candidates.json"
    table.parent.mkdir(parents=True, exist_ok=True)
    rows = selection_table(selection.candidates, selection.chosen.base_model)
    table.write_text(json.dumps(rows, indent=2))
    artifacts["selection"] = table
    tracked = log_training(
        target,
        tracking.run_name or flow_run.name,
        flatten(config.model_dump(mode="json")),
        tags,
        [record.model_dump() for record in trained.history],
        trained.best_epoch,
        scores,
        {name: getattr(splits, name).model_dump() for name in ("train", "validation", "test")},
        artifacts,
        config.eval.metric,  # type: ignore[attr-defined]
    )
    log_candidates(target, tracked.run_id, rows, selection.metric, baseline)
    markdown = training_markdown(trained, scores, verdict, tracked)
    create_markdown_artifact(key="training-run", description="Fine-tuning result", markdown=markdown)
    get_run_logger().info("Logged MLflow run %s: %s", tracked.run_id, tracked.link)
    return tracked
