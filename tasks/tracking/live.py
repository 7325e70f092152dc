"""A training run in MLflow while it trains: opened RUNNING before training starts (once per flow
run: a retried flow run resumes the same MLflow run), fed each epoch's metrics as they happen, and
ended FINISHED by the run's logging, or FAILED (with the error as a tag) or KILLED by the flow's
state hooks when the flow run fails, crashes or is cancelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.tracking import TrackingConfig
from tasks.core.errors import TrackingError, first_line
from tasks.tracking.store import (
    TrackedRun,
    TrackingTarget,
    configure_tracking,
    mlflow_client,
    run_link,
    run_tags,
    tracked_run,
)


class MetricSender(BaseModel):
    """Sends metrics to one open run (a small value, so a task can take it as a parameter)."""

    uri: str
    run_id: str

    def __call__(self, metrics: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        batch = [Metric(key, value, stamp, step) for key, value, step, stamp in metrics]
        mlflow_client(self.uri).log_batch(self.run_id, metrics=batch)


def find_open_run(target: TrackingTarget, flow_run_id: str) -> Any | None:
    """The training run this flow run already opened (a retry of the flow run), if any."""
    query = f"tags.`prefect.flow_run_id` = '{flow_run_id}' and tags.kind = 'training'"
    found = mlflow_client(target.uri).search_runs([target.experiment_id], query, max_results=1)
    return found[0] if found else None


def drive_run(target: TrackingTarget, run: Any) -> None:
    """Make the MLflow `run` this flow run's: RUNNING, tagged with the flow run, whose state hooks end
    it (KILLED when the flow run is cancelled, FAILED when it fails or crashes); an error an earlier,
    interrupted flow run left on it goes."""
    from prefect.runtime import flow_run

    client = mlflow_client(target.uri)
    run_id = run.info.run_id
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "prefect.flow_run_id", str(flow_run.id or ""))
    if "error" in run.data.tags:
        client.delete_tag(run_id, "error")


def continued_run(target: TrackingTarget, run_id: str | None) -> Any | None:
    """The MLflow run an unfinished run folder names, if it is still in this experiment."""
    if not run_id:
        return None
    try:
        run = mlflow_client(target.uri).get_run(run_id)
    except Exception:  # deleted, or another tracking store now: the continued run gets a new one
        return None
    return run if run.info.experiment_id == target.experiment_id else None


@task(name="open_training_run", retries=2, retry_delay_seconds=3)
def open_training_run(
    target: TrackingTarget,
    tracking: TrackingConfig,
    dataset_sha256: str,
    folder: Path | None = None,
    name: str | None = None,
) -> TrackedRun:
    """The training's MLflow run, RUNNING from now on: the one this flow run opened before (a retry),
    or the one of the unfinished run `folder` continues, else a new one (recorded in the folder),
    named `tracking.run_name`, else `name` (readable_run_name), else the flow run's name."""
    from prefect.runtime import flow_run

    from tasks.core.workspace import read_record, update_record

    client, flow_run_id = mlflow_client(target.uri), str(flow_run.id or "")
    record = read_record(folder) if folder else None
    try:
        existing = find_open_run(target, flow_run_id) if flow_run_id else None
        existing = existing or continued_run(target, record.mlflow_run_id if record else None)
        if existing is not None:
            run_id, run_name = existing.info.run_id, existing.info.run_name
            drive_run(target, existing)  # ended FAILED or KILLED by the interrupted attempt; this one goes on
        else:
            tags = run_tags(dataset_sha256, {"kind": "training"})
            run_name = tracking.run_name or name or flow_run.name
            run_id = client.create_run(target.experiment_id, run_name=run_name, tags=tags).info.run_id
    except Exception as error:
        raise TrackingError(f"MLflow at {target.uri} refused the run: {first_line(error)}.") from None
    if folder:
        update_record(folder, mlflow_run_id=run_id)
    get_run_logger().info("MLflow run %s %s: %s", run_id, "resumed" if existing else "opened", run_link(target, run_id))
    return tracked_run(target, run_id, name=run_name or "")


def metric_sender(run: TrackedRun) -> MetricSender:
    """What the training sends its metrics through."""
    return MetricSender(uri=run.uri, run_id=run.run_id)


def end_open_runs(flow_run: Any, status: str, error: str | None) -> None:
    """End this flow run's training runs that are still RUNNING (a flow state hook: best effort,
    it never raises: the flow's own failure is what the user needs to see)."""
    try:
        client = mlflow_client(configure_tracking())  # a stuck server: seconds, not MLflow's minutes of retries
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        query = f"tags.`prefect.flow_run_id` = '{flow_run.id}' and attributes.status = 'RUNNING'"
        for run in client.search_runs(experiments, query) if experiments else []:
            if error:
                client.set_tag(run.info.run_id, "error", error[:5000])
            client.set_terminated(run.info.run_id, status)
    except Exception as problem:  # an unreachable server must not hide the flow's own error
        get_run_logger_safe().warning("Could not end the MLflow run as %s: %s", status, first_line(problem))


def get_run_logger_safe() -> Any:
    """Prefect's logger where there is a run context, else this module's."""
    import logging

    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger(__name__)


def mark_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (failed, crashed): the flow run's open MLflow runs (a training, a sweep's parent
    run during a round, a trial's run) end FAILED with the error as a tag."""
    end_open_runs(flow_run, "FAILED", state.message or state.name)


def mark_killed(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (cancelled): the flow run's open MLflow runs end KILLED."""
    end_open_runs(flow_run, "KILLED", state.message)
