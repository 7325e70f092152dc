"""The score flow: batch scoring a file with the registered champion, through the flow and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.score import score
from flows.train import train
from tasks.config.pipeline import PipelineConfig
from tasks.config.score import ScoreConfig
from tasks.model.predict import load_classifier, predict_texts
from tests.helpers import ROOT
from tests.helpers.artifacts import read_artifact_markdown

SAMPLE = ROOT / "data/sample/support_tickets.csv"


def test_the_champion_scores_a_file_with_ids_labels_scores_and_its_version(
    tiny_config: Callable[..., PipelineConfig], tuneloop_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = train(config=tiny_config("train.epochs=1"))
    assert trained.promotion is not None and trained.promotion.champion == "1"
    monkeypatch.chdir(ROOT)  # the default data.path is the sample, relative to the project folder
    state = score(config=ScoreConfig(output=str(tmp_path / "scores.csv")), return_state=True)
    report = state.result()
    frame = pd.read_csv(report.output, dtype={"id": str, "model_version": str})
    assert list(frame.columns) == ["id", "label", "score", "model_version", "text"]
    sample = pd.read_csv(SAMPLE, dtype=str)
    with_text = sample[(sample["subject"].fillna("") + sample["body"].fillna("")).str.strip() != ""]
    assert report.rows == len(frame) == len(with_text) and set(frame["id"]) == set(with_text["ticket_id"])
    assert set(frame["model_version"]) == {"1"} and frame["score"].between(0, 1).all()
    assert report.labels == frame["label"].value_counts().to_dict()
    assert report.low_confidence == int((frame["score"] < 0.6).sum())
    # The same labels as the trained model gives: the registered version is that model.
    first = frame.head(5)
    ours = predict_texts(load_classifier(trained.model.path), first["text"].tolist())
    assert first["label"].tolist() == [row["label"] for row in ours]
    table = read_artifact_markdown(state.state_details.flow_run_id, "scores")
    assert table and json.loads(table)[0]["texts"] == max(report.labels.values())
    # Fetched once into the home folder's cache, never into /tmp.
    assert list((tuneloop_home / "model-cache").rglob("tuneloop.json"))

    runner = CliRunner()
    done = runner.invoke(app, ["score", "--data", str(SAMPLE), "--output", str(tmp_path / "s.parquet"), "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert payload["rows"] == report.rows and payload["model_version"] == "1"
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == report.rows


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--output", "scores.xlsx"], "write the predictions to a .parquet or .csv file"),
        (["--model", "models:/tuneloop-classifier@nobody"], "Cannot fetch model models:/tuneloop-classifier@nobody"),
        (["--data", "missing.csv"], "Data file not found"),
        (["--low-confidence", "2"], "low-confidence"),
    ],
)
def test_bad_scoring_input_is_one_message(arguments: list[str], message: str, tuneloop_home: Path) -> None:
    done = CliRunner().invoke(app, ["score", "--data", str(SAMPLE), *arguments])
    assert done.exit_code == 2, done.output
    assert message in done.output and "Traceback" not in done.output
