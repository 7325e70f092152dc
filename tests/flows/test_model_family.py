"""The better model family wins: a tiny fine-tune that loses to the TF-IDF baseline on validation is
not registered; the baseline is, as an MLflow Model of its own family, and as the first champion it
answers `tuneloop predict`, the score flow, pyfunc and `mlflow models serve` like a fine-tune would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from flows.cli import app
from flows.sweep import sweep
from flows.train import TrainResult, train
from tasks.config.pipeline import PipelineConfig, SweepPipelineConfig
from tasks.model.predict import load_classifier, predict_texts
from tasks.sweep.record import load_sweep
from tests.helpers.serving import served_labels


@pytest.fixture(scope="module")
def baseline_won(
    tiny_config: Callable[..., PipelineConfig], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainResult]:
    """A run where the baseline competes (the default) against a tiny BERT trained for one epoch."""
    home = tmp_path_factory.mktemp("family-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELOOP_HOME", str(home))
        result = train(config=tiny_config("train.epochs=1", "promotion.baseline_competes=true"))
    return home, result


def test_a_fine_tune_that_loses_to_the_baseline_is_not_champion_and_the_baseline_is_registered(
    baseline_won: tuple[Path, TrainResult],
) -> None:
    home, result = baseline_won
    assert result.family is not None and result.family.family == "baseline"
    assert result.family.difference is not None and result.family.difference.high < 0, "beyond noise"
    # Both models' predictions pair row by row: the paired difference is the difference of the scores.
    expected = result.evaluation.val.f1_macro - result.baseline.val.f1_macro
    assert result.family.difference.delta == pytest.approx(expected, abs=1e-6)
    ours = pd.read_csv(str(result.evaluation.val_predictions_path))["label"].tolist()
    assert ours == pd.read_parquet(result.splits.validation.path)["label"].tolist(), "in the split's row order"
    promotion = result.promotion
    assert promotion is not None and promotion.decision == "promoted" and promotion.champion_version == "1"
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    versions = client.search_model_versions("name='tuneloop-classifier'")
    assert len(versions) == 1, "only the winner is registered"
    tags = versions[0].tags
    assert tags["model_family"] == "baseline" and tags["base_model"] == "tfidf-logistic-regression"
    assert versions[0].run_id == result.tracking.baseline_run_id != result.tracking.run_id
    assert float(tags["test.f1_macro"]) == pytest.approx(result.baseline.test.f1_macro, abs=1e-6)
    baseline_run = client.get_run(str(result.tracking.baseline_run_id))
    assert baseline_run.data.tags["champion"].startswith("tuneloop-classifier v1: http")
    assert "champion" not in client.get_run(result.tracking.run_id).data.tags


def test_a_baseline_champion_answers_predict_score_pyfunc_and_serve(
    baseline_won: tuple[Path, TrainResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home, result = baseline_won
    monkeypatch.setenv("TUNELOOP_HOME", str(home))
    store = f"sqlite:///{home / 'mlflow.db'}"
    texts = sorted(pd.read_parquet(result.splits.test.path)["text"].tolist(), key=len)[:4]
    expected = [row["label"] for row in predict_texts(load_classifier(str(result.baseline.path)), texts)]
    answer = CliRunner().invoke(
        app, ["predict", "--model", "models:/tuneloop-classifier@champion", "--json", *(f"--text={t}" for t in texts)]
    )
    assert answer.exit_code == 0, answer.output
    printed = json.loads(answer.output.strip().splitlines()[-1])
    assert [row["label"] for row in printed["predictions"]] == expected

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    frame = mlflow.pyfunc.load_model("models:/tuneloop-classifier@champion").predict(texts)
    assert frame["label"].tolist() == expected and frame["score"].between(0, 1).all()
    assert served_labels("models:/tuneloop-classifier@champion", texts, store) == expected

    source = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    scored = CliRunner().invoke(app, ["score", "--data", str(source), "--output", str(tmp_path / "out.csv"), "--json"])
    assert scored.exit_code == 0, scored.output
    assert pd.read_csv(tmp_path / "out.csv")["label"].tolist() == expected


def test_predict_takes_a_runs_uri_to_the_models_each_run_logged(
    baseline_won: tuple[Path, TrainResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runs:/<run_id>/model` (as `--help` offers) resolves to the MLflow 3 logged model of that run:
    the fine-tune's run and the baseline's child run each answer with their own model."""
    home, result = baseline_won
    monkeypatch.setenv("TUNELOOP_HOME", str(home))
    texts = sorted(pd.read_parquet(result.splits.test.path)["text"].tolist(), key=len)[:3]
    for run_id, folder in (
        (result.tracking.run_id, result.model.path),
        (result.tracking.baseline_run_id, result.baseline.path),
    ):
        expected = [row["label"] for row in predict_texts(load_classifier(str(folder)), texts)]
        args = ["predict", "--model", f"runs:/{run_id}/model", "--json", *(f"--text={text}" for text in texts)]
        answer = CliRunner().invoke(app, args)
        assert answer.exit_code == 0, answer.output
        assert [row["label"] for row in json.loads(answer.output.strip().splitlines()[-1])["predictions"]] == expected


def test_predict_starts_no_prefect_server(baseline_won: tuple[Path, TrainResult]) -> None:
    """`tuneloop predict` labels texts without Prefect's server code ever loading (no temporary server,
    none of its seconds), here on the saved baseline folder: no torch either."""
    import subprocess
    import sys

    _, result = baseline_won
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from flows.cli import app\n"
        f"answer = CliRunner().invoke(app, ['predict', '--model', {str(result.baseline.path)!r}, '--text', 'refund'])\n"
        "assert answer.exit_code == 0, answer.output\n"
        "print(answer.output.split()[0], 'prefect.server.api.server' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    label, server_loaded, torch_loaded = done.stdout.split()
    assert label in {"account", "billing", "shipping", "technical"}
    assert server_loaded == "False" and torch_loaded == "False"


def test_a_sweep_whose_best_trial_loses_to_the_baseline_registers_and_promotes_the_baseline(
    sweep_config: Callable[..., SweepPipelineConfig], tuneloop_home: Path
) -> None:
    """A sweep competes like a training run: the baseline, fit on the training split, against the
    best trial's validation predictions row by row; better beyond noise and at the target, it is the
    sweep's candidate, registered from its child run of the sweep's run, and champion."""
    config = sweep_config(
        "promotion.baseline_competes=true",
        "sweep.target_f1=0.0",
        "sweep.trials_per_round=1",
        "sweep.max_rounds=1",
        "sweep.search=[learning_rate]",
        "train.epochs=1",
    )
    result = sweep(config=config)
    family = result.family
    assert result.outcome == "target_met" and family and family.family == "baseline"
    assert family.difference and family.difference.high < 0
    state = load_sweep(config.sweep, result.sweep_id)
    assert state is not None
    baseline = pd.read_csv(Path(state.folder) / "baseline" / "val_predictions.csv", dtype=str)
    assert baseline["label"].tolist() == pd.read_parquet(state.splits.validation.path)["label"].tolist()
    assert result.best_score is not None and family.difference.delta == pytest.approx(
        result.best_score - f1_score(baseline["label"], baseline["predicted"], average="macro"), abs=1e-6
    )
    promotion = result.promotion
    assert promotion and promotion.decision == "promoted" and promotion.champion_version == "1"
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    version = client.get_model_version("tuneloop-classifier", "1")
    assert version.tags["model_family"] == "baseline" and version.tags["sweep_id"] == result.sweep_id
    run = client.get_run(version.run_id)
    assert run.data.tags["kind"] == "baseline" and run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    answer = CliRunner().invoke(
        app, ["predict", "--model", "models:/tuneloop-classifier@champion", "--text", "refund my invoice", "--json"]
    )
    assert answer.exit_code == 0, answer.output
    [row] = json.loads(answer.output.strip().splitlines()[-1])["predictions"]
    assert row["label"] == "billing"
