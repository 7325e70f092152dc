"""Batch scoring: label every text of a file with a saved model and write the predictions (input
id, label, score, model version) as Parquet or CSV, with a summary: how many per label, how many
below the low-confidence score."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.score import ScoreConfig
from tasks.core.errors import ConfigError
from tasks.data.load import DatasetRef, read_table
from tasks.model.predict import load_classifier, predict_texts

OUTPUT_FORMATS = (".parquet", ".csv")


class ScoreReport(BaseModel):
    """What a scoring run wrote and what it found."""

    model: str
    model_version: str
    source: str
    output: str
    rows: int
    labels: dict[str, int]
    low_confidence: int
    threshold: float


def output_path(config: ScoreConfig, folder: Path) -> Path:
    """Where the predictions go: the configured path (.parquet or .csv) or the run folder."""
    path = Path(config.output).expanduser() if config.output else folder / "predictions.parquet"
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"output={config.output!r}: write the predictions to a .parquet or .csv file.")
    read = [Path(source).expanduser() for source in (config.data.path, config.data.test_path) if source]
    if any(path.resolve() == source.resolve() for source in read):
        raise ConfigError(
            f"output={config.output!r} is the file this run reads: writing the predictions there would replace "
            "your texts. Choose another output file (--output)."
        )
    if path.is_dir():
        raise ConfigError(f"output={config.output!r} is a folder: name a .parquet or .csv file inside it.")
    return path


def score_table(model_dir: Path, table: pd.DataFrame, model_version: str, batch_size: int) -> pd.DataFrame:
    """One row per text: its id, the label, the label's probability and the model version."""
    results = predict_texts(load_classifier(model_dir), table["text"].tolist(), batch_size)
    labels = [row["label"] for row in results]
    return pd.DataFrame(
        {
            "id": table["id"],
            "label": labels,
            "score": [row["probabilities"][label] for row, label in zip(results, labels, strict=True)],
            "model_version": model_version,
            "text": table["text"],
        }
    )


# A cell starting with one of these is a formula to a spreadsheet (=1+2, +cmd, -2+3, @SUM, tab, CR).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula, prefixed with a quote (OWASP's advice for
    CSV injection): the text reads the same, and nothing runs when the file is opened."""
    safe = frame.copy()
    for name in safe.columns:
        if safe[name].dtype == object or pd.api.types.is_string_dtype(safe[name]):
            column = safe[name].astype("string")
            risky = column.str.startswith(FORMULA_STARTS).fillna(False).astype(bool)
            safe[name] = column.where(~risky, "'" + column)
    return safe


def write_predictions(frame: pd.DataFrame, path: Path) -> Path:
    """The predictions as Parquet or CSV (by the suffix; CSV cells spreadsheet-safe), written whole or
    not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix.lower() == ".csv":
        spreadsheet_safe(frame).to_csv(partial, index=False)
    else:
        frame.to_parquet(partial, index=False)
    partial.replace(path)
    return path


def label_table(frame: pd.DataFrame, threshold: float) -> list[dict[str, object]]:
    """Per label: how many texts, their share, the mean score and how many are low-confidence."""
    rows = []
    for label, group in sorted(frame.groupby("label"), key=lambda item: -len(item[1])):
        rows.append(
            {
                "label": label,
                "texts": len(group),
                "share": round(len(group) / len(frame), 4),
                "mean score": round(float(group["score"].mean()), 4),
                f"below {threshold:g}": int((group["score"] < threshold).sum()),
            }
        )
    return rows


@task(name="check_output")
def check_output(config: ScoreConfig, folder: Path) -> Path:
    """Before any work: the predictions' path is one this flow can write (.parquet or .csv)."""
    return output_path(config, folder)


@task(name="score_texts")
def score_texts(
    texts: DatasetRef, model_dir: Path, model: str, model_version: str, config: ScoreConfig, folder: Path
) -> ScoreReport:
    """Label the texts with the model; write the predictions and a Prefect table of the labels."""
    from prefect.artifacts import create_table_artifact

    path = output_path(config, folder)
    table = read_table(texts)
    frame = score_table(model_dir, table, model_version, config.batch_size)
    write_predictions(frame, path)
    low = int((frame["score"] < config.low_confidence).sum())
    report = ScoreReport(
        model=model,
        model_version=model_version,
        source=config.data.path,
        output=str(path),
        rows=len(frame),
        labels=dict(Counter(frame["label"]).most_common()),
        low_confidence=low,
        threshold=config.low_confidence,
    )
    create_table_artifact(
        key="scores",
        table=label_table(frame, config.low_confidence),
        description=(
            f"{len(frame)} texts of {config.data.path} labelled by {model} (version {model_version}); "
            f"{low} below score {config.low_confidence:g}. Predictions: {path}"
        ),
    )
    get_run_logger().info(
        "Scored %d texts with %s v%s: %d low-confidence; wrote %s", len(frame), model, model_version, low, path
    )
    return report
