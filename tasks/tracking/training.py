"""A training in MLflow: one run with the flattened config as parameters (the same keys in every
run), per-epoch and test metrics, pictures, reports, the splits as dataset inputs and the model; a
child run per screened base-model candidate and one for the baseline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.config.pipeline import PipelineConfig
from tasks.config.tracking import TrackingConfig
from tasks.core.errors import TrackingError, first_line
from tasks.data.split import SplitReport
from tasks.data.validate import DataReport
from tasks.model.baseline import BaselineReport, baseline_verdict, beats_baseline
from tasks.model.evaluate import EvalReport
from tasks.model.finetune import TrainedModelRef
from tasks.model.plan import effective_train
from tasks.model.progress import PENDING_METRICS
from tasks.model.refit import RefitReport
from tasks.model.select import SelectionReport, selection_table
from tasks.tracking.model import example_text, log_baseline_model, log_model
from tasks.tracking.store import (
    TrackedRun,
    TrackingTarget,
    best_epoch_metrics,
    dataset_inputs,
    epoch_metrics,
    final_metrics,
    flatten,
    live_run_epochs,
    metric_name,
    mlflow_client,
    refit_metrics,
    refit_tags,
    run_tags,
    tracked_run,
    upload,
    write_config,
)


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
    model: tuple[Path, str] | None = None,
    live: tuple[str, list[tuple[str, float, int, int]]] | None = None,
    refit: RefitReport | None = None,
) -> TrackedRun:
    """Log everything in a few batched calls, into the run opened for the training (`live`: its id,
    and the metrics its stream could not send) or into a new run with the whole history (and the
    `refit`'s figures); `model` (its folder and an example text) is logged as the run's MLflow Model,
    then the run FINISHED."""
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client(target.uri)
    try:
        stamp = int(time.time() * 1000)
        rows = epoch_metrics(history) + (refit_metrics(refit) if refit else [])
        if live is None:
            run_id = client.create_run(target.experiment_id, run_name=run_name, tags=tags).info.run_id
            metrics = [Metric(key, value, stamp, step) for key, value, step in rows]
        else:
            run_id, unsent = live
            metrics = live_run_epochs(client, run_id, rows, unsent, stamp)
        metrics += [Metric(key, value, stamp, 0) for key, value in final_metrics(evaluation).items()]
        metrics.append(Metric("best_epoch", float(best_epoch), stamp, 0))
        chosen = [record for record in history if record["epoch"] == best_epoch]
        metrics += [Metric(key, value, stamp, 0) for key, value in best_epoch_metrics(chosen, metric).items()]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(key, value) for key, value in tags.items()]
            + ([RunTag("mlflow.runName", run_name)] if run_name else []),
        )
        client.log_inputs(run_id, datasets=dataset_inputs(datasets))
        upload(client, run_id, artifacts)
        model_id = log_model(target.uri, target.experiment_id, run_id, *model) if model else None
        client.set_terminated(run_id, "FINISHED")
    except TrackingError:
        raise
    except Exception as error:
        reason = first_line(error)
        raise TrackingError(
            f"Logging to MLflow at {target.uri} failed: {reason}. The trained model is kept in "
            f"{model[0] if model else 'the run folder'}; start the server and retry the flow run to log it."
        ) from None
    return tracked_run(target, run_id, model_id, run_name or "")


def log_candidates(
    target: TrackingTarget,
    parent_run_id: str,
    rows: list[dict[str, Any]],
    metric: str,
    baseline: BaselineReport,
    example: str | None,
) -> tuple[str, str | None]:
    """One child run per screened candidate (`rows` of the selection table) and one for the baseline,
    under the training's run (`parent_run_id` is passed explicitly: MLflow's active run is per thread).
    With an `example` text, the baseline's model is logged as that child run's MLflow Model. Returns the
    baseline's run id and model id."""
    from mlflow.entities import Metric

    client = mlflow_client(target.uri)
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
    return log_baseline_run(target, parent_run_id, baseline, example)


def log_baseline_run(
    target: TrackingTarget, parent_run_id: str, baseline: BaselineReport, example: str | None
) -> tuple[str, str | None]:
    """The baseline's child run under a training's or a sweep's run, with its validation and test
    scores and (with an `example` text) its model as the run's MLflow Model; its run id and model id."""
    from mlflow.entities import Metric

    client = mlflow_client(target.uri)
    child = client.create_run(
        target.experiment_id,
        run_name=f"baseline {baseline.name}",
        tags={
            "mlflow.parentRunId": parent_run_id,
            "candidate": baseline.name,
            "kind": "baseline",
            "model_family": "baseline",
        },
    )
    scores = final_metrics({"val": baseline.val.model_dump(), "test": baseline.test.model_dump()})
    scores.update(
        {metric_name("val", key): value for key, value in baseline.val.model_dump().items() if key != "per_class"}
    )
    client.log_batch(
        child.info.run_id, metrics=[Metric(key, value, child.info.start_time, 0) for key, value in scores.items()]
    )
    model_id = None
    if example is not None and baseline.path:
        model_id = log_baseline_model(target.uri, target.experiment_id, child.info.run_id, Path(baseline.path), example)
    client.set_terminated(child.info.run_id, "FINISHED")
    return child.info.run_id, model_id


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
            trained.refit.sentence(),
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


def pending_metrics(folder: Path) -> list[tuple[str, float, int, int]]:
    """The metrics the live stream could not send (tasks/model/progress.py), with their original
    timestamps; the file goes once they are logged."""
    path = folder / PENDING_METRICS
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    return [(str(key), float(value), int(step), int(stamp)) for key, value, step, stamp in rows]


@task(name="log_run", retries=2, retry_delay_seconds=5)
def log_run(
    target: TrackingTarget,
    run: TrackedRun,
    config: PipelineConfig,
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

    tracking: TrackingConfig = config.tracking
    artifacts = run_artifacts(data, splits, trained, evaluation)
    tags = run_tags(
        data.data.dataset_sha256,
        {
            "base_model": trained.base_model,
            "method": trained.method,
            "device": trained.device,
            "precision": trained.precision,
            "beats_baseline": str(beats_baseline(evaluation.val, baseline, selection.metric)),
            "kind": "training",
            **refit_tags(trained.refit),
            "validation_scored_by": evaluation.val_scored_by,
        },
    )
    scores = evaluation.model_dump()
    verdict = baseline_verdict(evaluation.val, baseline, selection.metric)
    table = Path(trained.path).parent / "selection" / "candidates.json"
    table.parent.mkdir(parents=True, exist_ok=True)
    rows = selection_table(selection.candidates, selection.chosen.base_model)
    table.write_text(json.dumps(rows, indent=2))
    artifacts["selection"] = table
    ran = config.model_copy(update={"train": effective_train(config.train, trained.plan)})
    artifacts[""] = write_config(ran, Path(trained.path).parent / "config.yaml")  # the run's root
    example = example_text(splits.validation) if tracking.log_model else None  # both models' input example
    tracked = log_training(
        target,
        run.name or tracking.run_name or flow_run.name,
        flatten(ran.model_dump(mode="json")),
        tags,
        [record.model_dump() for record in trained.history],
        trained.best_epoch,
        scores,
        {name: getattr(splits, name).model_dump() for name in ("train", "validation", "test")},
        artifacts,
        config.eval.metric,
        (Path(trained.path), example) if example is not None else None,
        (run.run_id, pending_metrics(Path(trained.path).parent)),
        trained.refit,
    )
    (Path(trained.path).parent / PENDING_METRICS).unlink(missing_ok=True)
    baseline_run, baseline_model = log_candidates(target, tracked.run_id, rows, selection.metric, baseline, example)
    tracked = tracked.model_copy(update={"baseline_run_id": baseline_run, "baseline_model_id": baseline_model})
    markdown = training_markdown(trained, scores, verdict, tracked)
    create_markdown_artifact(key="training-run", description="Fine-tuning result", markdown=markdown)
    get_run_logger().info("Logged MLflow run %s: %s", tracked.run_id, tracked.link)
    return tracked
