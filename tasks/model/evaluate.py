"""Score a fine-tuned model on the validation and test splits: the scores, a confusion-matrix
picture, a classification report and the test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.eval import EvalConfig
from tasks.core.errors import DataValidationError, QualityGateError
from tasks.core.metrics import SplitMetrics, split_metrics
from tasks.core.plots import pyplot, save_figure


class EvalReport(BaseModel):
    """Validation and test scores of the final model, and where the pictures and reports are."""

    val: SplitMetrics
    test: SplitMetrics
    confusion_matrix_path: str
    report_path: str
    predictions_path: str
    val_predictions_path: str | None = None  # validation rows: label and predicted
    val_scored_by: str = "final model"  # or "first fit, held out": a refit model trained on validation


def plot_confusion_matrix(y_true: list[str], y_pred: list[str], labels: list[str], path: Path, title: str) -> Path:
    """Counts of true versus predicted labels as a PNG, normalised colours, counts written in cells."""
    return plot_confusion_matrices(y_true, {title: y_pred}, labels, path)


def plot_confusion_matrices(
    y_true: list[str], predictions: dict[str, list[str]], labels: list[str], path: Path
) -> Path:
    """One confusion matrix per model (title -> its predictions), side by side on the same labels,
    drawn by scikit-learn's ConfusionMatrixDisplay: cells hold the counts, colours are shares of each
    true class (so a small class's errors show as clearly as a big one's)."""
    plt = pyplot()
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    size = max(4.0, 0.9 * len(labels) + 2)
    figure, panels = plt.subplots(1, len(predictions), figsize=(len(predictions) * size + 1, size), squeeze=False)
    for axes, (title, y_pred) in zip(panels[0], predictions.items(), strict=True):
        counts = confusion_matrix(y_true, y_pred, labels=labels)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        display = ConfusionMatrixDisplay(counts, display_labels=labels)
        display.plot(ax=axes, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d")
        display.im_.set_data(shares)
        display.im_.set_clim(0, 1)
        for (row, column), text in np.ndenumerate(display.text_):
            text.set_color("white" if shares[row, column] > 0.5 else "black")
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(title)
    figure.colorbar(display.im_, ax=panels[0].tolist(), fraction=0.046, label="share of true class")
    return save_figure(figure, path)


def score_model(
    model_dir: Path,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    config: EvalConfig,
    folder: Path,
    held_out: pd.DataFrame | None = None,
) -> EvalReport:
    """Predict both splits with the saved model (validation: the `held_out` predictions when given,
    those of the model that validation chose, since a refit model trained on validation); write the
    confusion matrix, report and test predictions."""
    from sklearn.metrics import classification_report

    from tasks.model.predict import load_classifier, predict_texts

    classifier = load_classifier(model_dir)
    labels = classifier.labels
    unscored = sorted(set(test["label"]) - set(labels))
    if unscored:  # they would drop out of every score, and the model would look better than it is
        rows = int(test["label"].isin(unscored).sum())
        raise DataValidationError(
            f"The test set has {rows} rows with labels the model never saw in training: "
            f"{', '.join(repr(label) for label in unscored[:10])}. They cannot be scored, so nothing is "
            "registered or promoted. Quarantine them (validation.unseen_test_labels=quarantine) or add "
            "training examples of those labels."
        )
    scored = {}
    for name, frame in (("val", validation), ("test", test)):
        if name == "val" and held_out is not None:
            scored[name] = (held_out["label"].tolist(), held_out["predicted"].tolist())
            continue
        predicted = [row["label"] for row in predict_texts(classifier, frame["text"].tolist(), config.batch_size)]
        scored[name] = (frame["label"].tolist(), predicted)
    folder.mkdir(parents=True, exist_ok=True)
    y_true, y_pred = scored["test"]
    matrix = plot_confusion_matrix(
        y_true, y_pred, labels, folder / "confusion_matrix.png", f"Test confusion matrix ({len(y_true)} texts)"
    )
    report = folder / "classification_report.txt"
    report.write_text(classification_report(y_true, y_pred, labels=labels, digits=4, zero_division=0), encoding="utf-8")
    predictions = folder / "test_predictions.csv"
    test.assign(predicted=y_pred).to_csv(predictions, index=False)
    validation_predictions = folder / "validation_predictions.csv"
    labels_seen, predicted_seen = scored["val"]
    pd.DataFrame({"label": labels_seen, "predicted": predicted_seen}).to_csv(validation_predictions, index=False)
    return EvalReport(
        val=split_metrics(*scored["val"], labels),
        test=split_metrics(*scored["test"], labels),
        confusion_matrix_path=str(matrix),
        report_path=str(report),
        predictions_path=str(predictions),
        val_predictions_path=str(validation_predictions),
        val_scored_by="final model" if held_out is None else "first fit, held out",
    )


def check_quality(report: EvalReport, config: EvalConfig) -> None:
    """The optional quality gate on the test score."""
    score = getattr(report.test, config.metric)
    if config.min_f1 is not None and score < config.min_f1:
        raise QualityGateError(
            f"Test {config.metric} {score:.4f} is below eval.min_f1={config.min_f1}. The model "
            "is tracked but not registered; try more epochs, a sweep, or another base model."
        )


@task(name="evaluate_model")
def evaluate_model(
    model_dir: str,
    validation_path: str,
    test_path: str,
    config: EvalConfig,
    folder: Path,
    validation_predictions: str | None = None,
) -> EvalReport:
    """Score the final model on test, and validation by the predictions the training made of it (those
    of the model chosen on validation, before any refit); write the confusion matrix and report."""
    held_out = pd.read_parquet(validation_predictions) if validation_predictions else None
    report = score_model(
        Path(model_dir), pd.read_parquet(validation_path), pd.read_parquet(test_path), config, folder, held_out
    )
    get_run_logger().info(
        "Test: accuracy %.4f, f1_macro %.4f, f1_weighted %.4f",
        report.test.accuracy,
        report.test.f1_macro,
        report.test.f1_weighted,
    )
    return report


@task(name="check_model_quality")
def check_model_quality(report: EvalReport, config: EvalConfig) -> None:
    """Fail the run when the test score is under eval.min_f1 (nothing is registered then)."""
    check_quality(report, config)
