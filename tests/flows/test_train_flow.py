"""The train flow end to end under a real Prefect server, with a tiny BERT and MLflow on a temp SQLite."""

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from transformers import TrainerCallback
from typer.testing import CliRunner

from flows.cli import app
from flows.train import train
from tasks.config.eval import EvalConfig
from tasks.config.pipeline import PipelineConfig
from tasks.config.split import SplitConfig
from tasks.config.train import TrainConfig
from tasks.core.metrics import METRIC_KEYS
from tasks.data.split import split_table, write_splits
from tasks.model.finetune import finetune
from tasks.model.predict import load_classifier, predict_texts
from tasks.model.resolve import ModelRef
from tasks.tracking.store import flatten
from tests.helpers import ROOT, machine_device
from tests.helpers.artifacts import read_artifact_markdown
from tests.helpers.serving import served_labels
from tests.helpers.tables import clean_table


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_flow_logs_a_complete_comparable_mlflow_run(
    tiny_config: Callable[..., PipelineConfig], tiny_bert: Path, tuneloop_home: Path, method: str
) -> None:
    config = tiny_config(f"train.method={method}", "train.early_stopping_patience=0", "tracking.loss_every_steps=5")
    state = train(config=config, return_state=True)
    result = state.result()
    assert result.model.method == method and (result.model.device, result.model.precision) == machine_device()
    assert [record.epoch for record in result.model.history] == [1, 2]
    # After success only the final model stays (train.keep_checkpoints=false): no epoch checkpoints.
    assert Path(result.model.path, "tuneloop.json").is_file() and not Path(result.folder, "checkpoints").exists()
    assert not Path(result.folder, "refit", "checkpoints").exists(), "nor those of its refit (111 validation rows)"
    if method == "lora":  # counted with the adapters, before they are merged into the saved model
        from transformers import AutoModelForSequenceClassification

        saved = AutoModelForSequenceClassification.from_pretrained(result.model.path).num_parameters()
        assert result.model.trainable_parameters < saved < result.model.total_parameters

    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    run = client.get_run(result.tracking.run_id)
    assert run.data.params.keys() == flatten(config.model_dump(mode="json")).keys()
    assert run.data.params["train.method"] == method
    # What ran, not "None": the values left to the method and the data are filled in from the plan.
    assert run.data.params["train.learning_rate"] == {"full": "0.0001", "lora": "0.001"}[method]
    assert run.data.params["train.max_length"] == "64" and run.data.params["train.epochs"] == "2"
    assert not [key for key in run.data.params if key.startswith("sweep.")], "a training run has no sweep section"
    # The whole resolved config beside the parameters, with the same effective values.
    logged = yaml.safe_load(
        Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{run.info.run_id}/config.yaml", tracking_uri=client.tracking_uri
            )
        ).read_text()
    )
    assert PipelineConfig.model_validate(logged).train.learning_rate == float(run.data.params["train.learning_rate"])
    # MLflow 3 opens a model-training experiment on its runs, not in GenAI mode.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for key in ("val/f1_macro", "val/accuracy", "train/epoch_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    # The loss every 5 optimizer steps and at each epoch's end, by step.
    per_epoch = result.model.plan.steps_per_epoch
    expected = sorted({*range(5, 2 * per_epoch + 1, 5), per_epoch, 2 * per_epoch})
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == expected
    for key in METRIC_KEYS:
        assert f"test/{key}" in run.data.metrics
    assert "test/billing/f1" in run.data.metrics
    assert run.data.tags["dataset_sha256"] == result.data.data.dataset_sha256
    assert run.data.tags["prefect.flow_run_id"]
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"evaluation", "validation", "splits", "config.yaml"} <= artifacts
    # The model is the run's logged MLflow Model (transformers flavor), with tuneloop.json beside it;
    # the baseline's is its child run's (scikit-learn flavor).
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    [logged] = [model for model in models if model.source_run_id == run.info.run_id]
    [baseline] = [model for model in models if model.source_run_id == result.tracking.baseline_run_id]
    assert logged.model_id == result.tracking.model_id and logged.tags["model_family"] == "finetune"
    assert baseline.model_id == result.tracking.baseline_model_id and baseline.tags["model_family"] == "baseline"
    assert run.info.run_name.startswith("train-support_tickets-") and run.info.run_name.count("-") >= 3
    outputs = client.get_run(run.info.run_id).outputs.model_outputs  # listed on the run's page
    assert [output.model_id for output in outputs] == [logged.model_id]
    files = {item.path for item in client.list_logged_model_artifacts(logged.model_id)}
    assert {"MLmodel", "tuneloop.json", "requirements.txt", "input_example.json"} <= files
    evaluation = {item.path for item in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in evaluation
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    kinds = sorted((child.data.tags["kind"], child.data.tags["candidate"]) for child in children)
    assert kinds == [("baseline", "tfidf-logistic-regression"), ("candidate", str(tiny_bert))]
    candidate = next(child for child in children if child.data.tags["kind"] == "candidate")
    assert candidate.data.tags["license"] == "apache-2.0" and int(candidate.data.tags["parameters"]) > 0
    baseline = next(child for child in children if child.data.tags["kind"] == "baseline")
    assert 0 <= baseline.data.metrics["val/f1_macro"] <= 1 and "test/f1_macro" in baseline.data.metrics
    assert run.data.tags["beats_baseline"] in ("True", "False")
    assert "baseline" in result.verdict
    assert {dataset.dataset.digest for dataset in run.inputs.dataset_inputs} == {
        ref.sha256[:16] for ref in (result.splits.train, result.splits.validation, result.splits.test)
    }
    summary = read_artifact_markdown(state.state_details.flow_run_id, "training-run")
    assert f"test f1_macro {run.data.metrics['test/f1_macro']:.4f}" in summary and result.tracking.run_id in summary


@pytest.mark.usefixtures("first_gpu_held")
def test_a_run_on_a_host_with_several_gpus_takes_one_no_trial_holds(
    tiny_config: Callable[..., PipelineConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tuneloop run` (or a train deployment's run) beside a sweep's trial that holds a 2-GPU host's
    first GPU trains on the other (the two GPUs are only named, so it trains on the CPU). On a machine
    with a real GPU, CUDA has started in this test process already and would keep every GPU in view:
    the test sees this process as one that has not started it, on a host whose GPUs it cannot use."""
    import torch

    from tasks.core import gpus

    monkeypatch.setattr(gpus, "cuda_started", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = train(config=tiny_config("promotion.register_model=false"))
    assert result.model.device == "cpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1", "the run sees only the GPU it took"


def test_saved_model_reloads_offline_with_its_labels_and_predicts(
    tiny_config: Callable[..., PipelineConfig], tuneloop_home: Path
) -> None:
    result = train(config=tiny_config("train.epochs=1"))
    classifier = load_classifier(result.model.path)
    assert classifier.labels == ["account", "billing", "shipping", "technical"]
    assert classifier.network.config.id2label == dict(enumerate(classifier.labels))
    test = pd.read_parquet(result.splits.test.path)
    predictions = predict_texts(classifier, test["text"].tolist(), batch_size=7)
    saved = pd.read_csv(result.evaluation.predictions_path)
    assert [row["label"] for row in predictions] == saved["predicted"].tolist()
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-4 for row in predictions)

    runner = CliRunner()
    for model in (result.model.path, f"models:/{result.tracking.model_id}", "models:/tuneloop-classifier@champion"):
        output = runner.invoke(app, ["predict", "--model", model, "--text", test["text"].iloc[0], "--json"])
        assert output.exit_code == 0, output.output
        assert f'"label": "{predictions[0]["label"]}"' in output.output


def test_the_champion_is_an_mlflow_model_that_loads_and_serves(
    tiny_config: Callable[..., PipelineConfig], tuneloop_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own tools use the registered model: pyfunc returns labels and scores, and
    `mlflow models serve` answers /invocations with the labels tuneloop predicts."""
    result = train(config=tiny_config("train.epochs=1"))
    store = f"sqlite:///{tuneloop_home / 'mlflow.db'}"
    texts = sorted(pd.read_parquet(result.splits.test.path)["text"].tolist(), key=len)[:3]
    ours = [row["label"] for row in predict_texts(load_classifier(result.model.path), texts)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    frame = mlflow.pyfunc.load_model("models:/tuneloop-classifier@champion").predict(texts)
    assert frame["label"].tolist() == ours and frame["score"].between(0, 1).all()

    assert served_labels("models:/tuneloop-classifier@champion", texts, store) == ours


def test_interrupted_training_resumes_from_its_last_checkpoint(tiny_bert: Path, tmp_path: Path) -> None:
    splits, removed = split_table(clean_table(), SplitConfig())
    report = write_splits(splits, removed, SplitConfig(), tmp_path / "splits")
    model = ModelRef(base_model="tiny", path=str(tiny_bert), source="local folder")
    config = TrainConfig(epochs=3, batch_size=16, early_stopping_patience=0)

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("power cut after the first epoch's checkpoint")

    with pytest.raises(KeyboardInterrupt):
        finetune(report, model, config, EvalConfig(), tmp_path / "run", callbacks=[Interrupt()])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [path.name for path in checkpoints.iterdir()] == ["checkpoint-3"]
    # a kill while the next checkpoint was written: its weights are there, its trainer state is not
    cut = shutil.copytree(checkpoints / "checkpoint-3", checkpoints / "checkpoint-6")
    (cut / "trainer_state.json").unlink()

    resumed = finetune(report, model, config, EvalConfig(), tmp_path / "run")
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-3"), "not from the cut-off one"
    assert [record.epoch for record in resumed.history] == [1, 2, 3]
    assert resumed.history[0].seconds == 0.0 and resumed.history[2].seconds > 0  # epoch 1 ran before the cut


def test_a_refit_run_trains_twice_and_registers_the_model_trained_on_every_row(
    tiny_config: Callable[..., PipelineConfig], tuneloop_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """train.refit=always: the first fit chooses the epoch on validation, the refit trains that many
    epochs on train + validation; the run's validation scores are the first fit's held-out
    predictions; MLflow and the summary say so; the registered version is the refit model."""
    import math

    from tasks.registry.fetch import fetch_model

    config = tiny_config(
        "train.refit=always", "train.epochs=3", "tracking.experiment=refit", "tracking.loss_every_steps=5"
    )
    with caplog.at_level(logging.INFO):
        result = train(config=config)
    refit, rows = result.model.refit, result.splits.train.rows + result.splits.validation.rows
    assert refit.refit and refit.rows == rows and refit.epochs == result.model.best_epoch
    assert refit.steps == refit.epochs * math.ceil(rows / 64) and len(refit.epoch_losses) == refit.epochs
    assert "Refit on train + validation" in caplog.text and f"refit epoch {refit.epochs}/{refit.epochs}" in caplog.text
    assert json.loads(Path(result.model.path, "tuneloop.json").read_text())["refit"] is True
    held_out = pd.read_parquet(result.model.validation_predictions)
    assert len(held_out) == result.splits.validation.rows
    assert result.evaluation.val.accuracy == pytest.approx((held_out["label"] == held_out["predicted"]).mean())

    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    run = client.get_run(result.tracking.run_id)
    assert run.data.tags["refit"] == "true" and "train.refit=always" in run.data.tags["refit_reason"]
    assert run.data.tags["validation_scored_by"] == "first fit, held out", "the refit model trained on validation"
    assert run.data.params["train.refit"] == "always"
    figures = (run.data.metrics["refit/rows"], run.data.metrics["refit/epochs"], run.data.metrics["refit/steps"])
    assert figures == (rows, refit.epochs, refit.steps)
    epochs = client.get_metric_history(run.info.run_id, "refit/epoch_loss")
    assert sorted(metric.step for metric in epochs) == list(range(1, refit.epochs + 1))
    assert client.get_metric_history(run.info.run_id, "refit/loss"), "the refit's loss is streamed too"
    assert result.promotion and result.promotion.version
    registered = fetch_model(result.promotion.version.uri, client.tracking_uri)
    assert json.loads((registered / "tuneloop.json").read_text())["refit"] is True


def test_a_run_cut_off_in_its_refit_continues_the_refit_and_keeps_its_first_fit(
    tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resume after a crash in the second phase: the first fit is not trained again (its record is
    kept), the refit continues from its last checkpoint, and the model is the refit's."""
    splits, removed = split_table(clean_table(), SplitConfig())
    report = write_splits(splits, removed, SplitConfig(), tmp_path / "splits")
    model = ModelRef(base_model="tiny", path=str(tiny_bert), source="local folder")
    config = TrainConfig(epochs=3, batch_size=16, early_stopping_patience=0, refit="always")

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("power cut after the refit's first checkpoint")

    run = tmp_path / "run"
    log = logging.getLogger("refit-resume")
    with pytest.raises(KeyboardInterrupt):
        finetune(report, model, config, EvalConfig(), run, log=log, refit_callbacks=[Interrupt()])
    first = json.loads((run / "first_fit.json").read_text())
    assert not (run / "model").exists(), "a refit run saves no model before the refit has ended"
    [checkpoint] = [path.name for path in (run / "refit" / "checkpoints").iterdir()]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="refit-resume"):
        resumed = finetune(report, model, config, EvalConfig(), run, log=log)
    assert f"The first fit had ended (epoch {first['best_epoch']} chosen)" in caplog.text
    assert "epoch 1/3: train loss" not in caplog.text, "the first fit is not trained again"
    assert f"Resuming from {checkpoint}" in caplog.text
    assert resumed.refit.refit and resumed.refit.epochs == first["best_epoch"] == resumed.best_epoch
    assert [record.model_dump() for record in resumed.history] == first["history"]
    assert json.loads((run / "model" / "tuneloop.json").read_text())["refit"] is True


def run_sample(*extra: str):
    """`tuneloop run` on the sample data, in process."""
    sample = [
        "--config",
        str(ROOT / "data/sample/config.yaml"),
        "--data",
        str(ROOT / "data/sample/support_tickets.csv"),
    ]
    return CliRunner().invoke(app, ["run", *sample, *extra])


def test_missing_model_offline_is_one_clear_error(tmp_path: Path, tuneloop_home: Path) -> None:
    result = run_sample("--set", "model.candidates=[someone/missing-model]")
    assert result.exit_code == 2
    message = result.output[result.output.index("error: ") :]
    assert "No candidate model passed screening" in message and "Traceback" not in result.output
    assert "someone/missing-model: Base model 'someone/missing-model' not found" in message
    runs = list((tuneloop_home / "runs").glob("*/model"))
    assert runs == [], "nothing is saved as a model by a failed run"


def test_unreachable_tracking_server_fails_before_training(
    monkeypatch: pytest.MonkeyPatch, tuneloop_home: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = run_sample()
    assert result.exit_code == 2
    message = result.output[result.output.index("error: ") :]
    assert "MLflow tracking store http://127.0.0.1:9 cannot be used" in message and "unset it" in message
    assert not list((tuneloop_home / "runs").glob("*/splits"))


def test_quality_gate_fails_the_run_after_logging_it(
    tiny_config: Callable[..., PipelineConfig], tuneloop_home: Path
) -> None:
    state = train(config=tiny_config("train.epochs=1", "eval.min_f1=0.999"), return_state=True)
    assert state.is_failed()
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len([run for run in runs if run.data.tags.get("kind") == "training"]) == 1, "the training is tracked once"
    registry = mlflow.MlflowClient(client.tracking_uri, registry_uri=client.tracking_uri)
    assert registry.search_registered_models() == [], "a run that failed its gate registers nothing"


def test_models_command_prints_the_screening_table(tiny_bert: Path, tmp_path: Path) -> None:
    import json

    from tests.helpers.models import build_tiny_bert

    gpl = build_tiny_bert(tmp_path / "gpl", ["some words"], license_name="gpl-3.0")
    result = CliRunner().invoke(app, ["models", "--candidates", str(tiny_bert), "--candidates", str(gpl), "--json"])
    assert result.exit_code == 0, result.output
    rows = {
        Path(row["candidate"]).name: row for row in json.loads(result.output.strip().splitlines()[-1])["candidates"]
    }
    assert rows["tiny-bert"]["accepted"] and not rows["gpl"]["accepted"]
    assert rows["gpl"]["reasons"] == ["license gpl-3.0 is not in model.allowed_licenses"]
    text = CliRunner().invoke(app, ["models", "--candidates", str(gpl)])
    assert text.exit_code == 0 and text.output.startswith("rejected") and "gpl-3.0" in text.output


def test_the_run_is_live_while_it_trains_and_opened_once_per_flow_run(tiny_bert: Path, tuneloop_home: Path) -> None:
    """The MLflow run is RUNNING with each epoch's scores before training ends; a retry of the
    flow run (the task run again) resumes the same MLflow run instead of opening a second one."""
    from prefect import flow

    from tasks.config.tracking import TrackingConfig
    from tasks.tracking.live import metric_sender, open_training_run
    from tasks.tracking.store import ensure_experiment

    splits, removed = split_table(clean_table(), SplitConfig())
    report = write_splits(splits, removed, SplitConfig(), tuneloop_home / "splits")
    model = ModelRef(base_model="tiny", path=str(tiny_bert), source="local folder")
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    seen: list[tuple[str, list[int]]] = []

    class Watch(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):  # the stream's thread sends the epoch now
            epoch, deadline = round(state.epoch), time.monotonic() + 10
            while time.monotonic() < deadline:
                steps = [m.step for m in client.get_metric_history(run.run_id, "val/f1_macro")]
                if epoch in steps:
                    break
                time.sleep(0.1)
            seen.append((client.get_run(run.run_id).info.status, steps))

    @flow
    def train_live() -> list[str]:
        nonlocal run
        target = ensure_experiment("live")
        run = open_training_run(target, TrackingConfig(), "sha")
        again = open_training_run(target, TrackingConfig(), "sha")
        from tasks.model.progress import metric_stream

        stream = metric_stream(metric_sender(run), logging.getLogger("test"), tuneloop_home, 0)
        config = TrainConfig(epochs=2, batch_size=16, early_stopping_patience=0)
        finetune(report, model, config, EvalConfig(), tuneloop_home / "run", callbacks=[stream, Watch()])
        return [run.run_id, again.run_id]

    run = None
    first, second = train_live()
    assert first == second, "one MLflow run per flow run"
    assert seen == [("RUNNING", [1]), ("RUNNING", [1, 2])]


def test_a_failed_training_ends_its_run_failed_with_the_error(
    tiny_config: Callable[..., PipelineConfig], tuneloop_home: Path
) -> None:
    # bf16 on the CPU fails inside the training task, after its MLflow run opened, on every machine.
    state = train(config=tiny_config("train.device=cpu", "train.precision=bf16"), return_state=True)
    assert state.is_failed()
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    [run] = client.search_runs([experiment.experiment_id], "tags.kind = 'training'")
    assert run.info.status == "FAILED" and "bf16" in run.data.tags["error"]
