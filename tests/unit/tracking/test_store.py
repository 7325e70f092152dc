from pathlib import Path

import pytest

from tasks.config.load import load_config
from tasks.config.pipeline import PipelineConfig
from tasks.tracking.store import epoch_metrics, final_metrics, flatten, metric_name


def test_every_run_logs_the_same_parameter_keys() -> None:
    default = flatten(PipelineConfig().model_dump(mode="json"))
    changed = flatten(load_config(None, ["train.method=lora", "data.labels=[a, b]"]).model_dump(mode="json"))
    assert default.keys() == changed.keys()
    assert changed["train.method"] == "lora" and changed["data.labels"] == '["a", "b"]'
    assert default["train.learning_rate"] == "None"


def test_metric_names_are_namespaced_and_safe() -> None:
    assert metric_name("test", "class: a/b?", "f1") == "test/class_ a_b_/f1"
    rows = epoch_metrics(
        [
            {"epoch": 1, "train_loss": 0.5, "val": {"f1_macro": 0.7}},
            {"epoch": 2, "train_loss": None, "val": {"f1_macro": 0.8}},
        ]
    )
    assert rows == [("train/epoch_loss", 0.5, 1), ("val/f1_macro", 0.7, 1), ("val/f1_macro", 0.8, 2)]
    scores = final_metrics(
        {
            "val": {"f1_macro": 0.8, "per_class": {}},
            "test": {"f1_macro": 0.9, "per_class": {"x": {"f1": 0.9, "support": 3}}},
        }
    )
    assert scores == {"test/f1_macro": 0.9, "test/x/f1": 0.9}


def test_experiments_are_model_training_experiments_unless_someone_chose_otherwise(tuneloop_home: Path) -> None:
    import mlflow

    from tasks.tracking.store import ensure_experiment

    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    new = ensure_experiment("fresh")
    assert client.get_experiment(new.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("from-an-older-version")  # no kind: MLflow would open it in GenAI mode
    ensure_experiment("from-an-older-version")
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    chosen = client.create_experiment("genai", tags={"mlflow.experimentKind": "genai_development"})
    ensure_experiment("genai")
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_a_continued_run_gets_the_epochs_its_stream_never_sent_once(tuneloop_home: Path) -> None:
    """A run continued from a checkpoint (a rerun of a killed run, a retried trial) streamed only
    the epochs after it, and a process killed right after an epoch's checkpoint may not have sent
    that epoch: its end logs every epoch of the history the run lacks, once, and not the ones it
    holds or still has queued (unsent, with their own timestamps)."""
    import mlflow

    from tasks.tracking.store import ensure_experiment
    from tasks.tracking.sweep import log_trial
    from tasks.tracking.training import log_training

    target = ensure_experiment("continued")
    client = mlflow.MlflowClient(target.uri)
    trial_run = client.create_run(target.experiment_id).info.run_id
    history = [{"epoch": epoch, "train_loss": None, "val": {"f1_macro": 0.5 + epoch / 10}} for epoch in (1, 2, 3, 4)]
    unsent = [("val/f1_macro", 0.9, 4, 1_000)]  # epoch 4: kept through an outage, sent at the end
    trained = client.create_run(target.experiment_id).info.run_id
    for run in (trial_run, trained):
        for epoch in (1, 3):  # epoch 2 died in the stream's queue with the first process
            client.log_metric(run, "val/f1_macro", 0.5 + epoch / 10, step=epoch)
    log_trial(target, trial_run, {}, {"state": "complete", "history": history}, "f1_macro", unsent)
    scores = {"val": {"f1_macro": 0.9, "per_class": {}}, "test": {"f1_macro": 0.9, "per_class": {}}}
    log_training(target, None, {}, {}, history, 4, scores, {}, {}, live=(trained, unsent))
    for run in (trial_run, trained):
        steps = sorted(metric.step for metric in client.get_metric_history(run, "val/f1_macro"))
        assert steps == [1, 2, 3, 4], steps


def test_run_names_say_what_ran_on_what_and_when() -> None:
    from datetime import datetime

    from tasks.tracking.store import readable_run_name

    when = datetime(2026, 12, 7, 13, 20)
    name = readable_run_name("train", "data/banking.csv", "sentence-transformers/all-MiniLM-L6-v2", when)
    assert name == "train-banking-all-MiniLM-L6-v2-1207-1320"
    odd = readable_run_name("sweep", "/tmp/my data (v2).tsv.gz", "/models/tiny bert/", when)
    assert odd == "sweep-my_data_v2_.tsv-tiny_bert-1207-1320"


def test_links_are_urls_for_servers_and_for_local_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.tracking.store import TrackingTarget, run_link, version_link

    server = TrackingTarget(uri="http://user:secret@mlflow:5000", experiment="e", experiment_id="3")
    assert run_link(server, "abc").startswith("http://user:***@mlflow:5000/#/experiments/3/runs/abc")
    local = TrackingTarget(uri="sqlite:////tmp/mlflow.db", experiment="e", experiment_id="1")
    assert run_link(local, "abc").startswith("http://127.0.0.1:5000/#/experiments/1/runs/abc")
    monkeypatch.setenv("TUNELOOP_MLFLOW_UI", "http://ui.example:8080/")
    assert version_link("sqlite:////tmp/mlflow.db", "m", "4") == "http://ui.example:8080/#/models/m/versions/4"
