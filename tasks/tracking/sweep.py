"""A sweep in MLflow: one parent run per sweep, one child run per trial (the parent passed
explicitly: MLflow's active run is per thread), and each round's summary and pictures on the parent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasks.model.evaluate import EvalReport
from tasks.model.refit import RefitReport
from tasks.tracking.live import drive_run
from tasks.tracking.model import log_model
from tasks.tracking.store import (
    TrackingTarget,
    best_epoch_metrics,
    epoch_metrics,
    final_metrics,
    live_run_epochs,
    metric_name,
    mlflow_client,
    refit_metrics,
    refit_tags,
    upload,
)


def start_sweep_run(
    target: TrackingTarget, sweep_id: str, params: dict[str, str], tags: dict[str, str], config: Path, name: str
) -> str:
    """The sweep's parent run named `name` (left running until the sweep ends), with the resolved config
    file; its id."""
    from mlflow.entities import Param

    client = mlflow_client(target.uri)
    run = client.create_run(target.experiment_id, run_name=name, tags={**tags, "sweep_id": sweep_id, "kind": "sweep"})
    client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in params.items()])
    client.log_artifact(run.info.run_id, str(config))
    return run.info.run_id


def open_trial_run(target: TrackingTarget, parent_run_id: str, sweep_id: str, round_number: int, number: int) -> str:
    """The trial's child run, RUNNING while it trains and ended by the trial flow run's hooks if it
    is cancelled or crashes (a retried flow run of the trial reuses it); its id."""
    client = mlflow_client(target.uri)
    query = f"tags.sweep_id = '{sweep_id}' and tags.trial_number = '{number}' and tags.kind = 'trial'"
    found = client.search_runs([target.experiment_id], query, max_results=1)
    if found:
        drive_run(target, found[0])
        return found[0].info.run_id
    from prefect.runtime import flow_run

    tags = {
        "mlflow.parentRunId": parent_run_id,
        "sweep_id": sweep_id,
        "round": str(round_number),
        "trial_number": str(number),
        "kind": "trial",
        "prefect.flow_run_id": str(flow_run.id or ""),  # its hooks end the run (see drive_run)
    }
    return client.create_run(target.experiment_id, run_name=f"{sweep_id} trial {number}", tags=tags).info.run_id


def log_trial(
    target: TrackingTarget,
    run_id: str,
    params: dict[str, str],
    trial: dict[str, Any],
    metric: str,
    unsent: list[tuple[str, float, int, int]],
) -> None:
    """End a trial's child run: the same parameter keys as every run, the chosen epoch's scores (a
    pruned trial's best), its outcome (its epochs were streamed while it trained, or, cross-validated,
    are logged now), and the metrics the stream could not send."""
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client(target.uri)
    tags = {"pruned": str(trial["state"] == "pruned"), "state": trial["state"]}
    if trial.get("error"):
        tags["error"] = trial["error"][:5000]
    if trial.get("folds"):
        tags["cross_validation"] = f"{trial['folds']} folds, scored out of fold"
    stamp = int(time.time() * 1000)
    chosen = [record for record in trial["history"] if record["epoch"] == trial.get("best_epoch")]
    best = best_epoch_metrics(chosen or trial["history"], metric)
    metrics = [Metric(key, value, stamp, 0) for key, value in best.items()]
    if trial.get("best_epoch"):
        metrics.append(Metric("best_epoch", float(trial["best_epoch"]), stamp, 0))
    metrics += live_run_epochs(client, run_id, epoch_metrics(trial["history"]), unsent, stamp)
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    client.set_terminated(run_id, "FINISHED" if trial["state"] != "failed" else "FAILED")


def end_dead_trial_runs(target: TrackingTarget, run_ids: list[str]) -> None:
    """The child runs of trials whose worker died, still RUNNING: ended FAILED with the reason."""
    client = mlflow_client(target.uri)
    for run_id in run_ids:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "error", "the trial's worker died (no heartbeat); the trial was retried")
            client.set_terminated(run_id, "FAILED")


def log_round(
    target: TrackingTarget,
    parent_run_id: str,
    round_number: int,
    metric: str,
    best: float | None,
    trials: int,
    pruned: int,
    pictures: dict[str, Path],
) -> None:
    """The round's summary on the parent run (step = round) and the sweep's pictures."""
    from mlflow.entities import Metric

    client = mlflow_client(target.uri)
    stamp = int(time.time() * 1000)
    metrics = [
        Metric("sweep/trials", float(trials), stamp, round_number),
        Metric("sweep/pruned", float(pruned), stamp, round_number),
    ]
    if best is not None:
        metrics.append(Metric(metric_name("sweep", f"best_{metric}"), best, stamp, round_number))
    client.log_batch(parent_run_id, metrics=metrics)
    for path in pictures.values():
        client.log_artifact(parent_run_id, str(path), "sweep")


def finish_sweep_run(target: TrackingTarget, parent_run_id: str, outcome: str, message: str) -> None:
    """Close the parent run with the sweep's outcome."""

    client = mlflow_client(target.uri)
    client.set_tag(parent_run_id, "outcome", outcome)
    client.set_tag(parent_run_id, "mlflow.note.content", message)
    client.set_terminated(parent_run_id, "FINISHED")


def log_final_model(
    target: TrackingTarget,
    run_id: str,
    evaluation: EvalReport,
    model_path: str | None,
    example: str,
    refit: RefitReport | None = None,
) -> str | None:
    """A sweep's best trial, evaluated at the end: its test scores, evaluation files and MLflow Model
    (with the `refit` that made it, when it was refit on train + validation), added to the trial's
    run so that it can be registered like a training run; the model's id."""
    from mlflow.entities import Metric, RunTag

    client = mlflow_client(target.uri)
    stamp = int(time.time() * 1000)
    scores = list(final_metrics(evaluation.model_dump()).items())
    scores += [(key, value) for key, value, step in refit_metrics(refit) if step == 0] if refit else []
    epochs = [Metric(key, value, stamp, step) for key, value, step in refit_metrics(refit) if step] if refit else []
    tags = [RunTag(key, value) for key, value in refit_tags(refit).items()] if refit else []
    client.log_batch(run_id, metrics=[Metric(key, value, stamp, 0) for key, value in scores] + epochs, tags=tags)
    upload(
        client,
        run_id,
        {
            "evaluation": Path(evaluation.confusion_matrix_path),
            "evaluation/report": Path(evaluation.report_path),
            "evaluation/predictions": Path(evaluation.predictions_path),
        },
    )
    model_id = log_model(target.uri, target.experiment_id, run_id, Path(model_path), example) if model_path else None
    client.set_tag(run_id, "final_model", "True")
    return model_id
