"""The classical baseline every run is measured against: TF-IDF features and logistic regression.
It is a model family of its own: saved beside the run (a pickled scikit-learn pipeline and
`tuneloop.json`), logged as an MLflow Model, and registered instead of the fine-tune when it beats
the fine-tune on validation beyond noise. A fine-tune that scores below it is not worth its cost."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.promotion import PromotionConfig
from tasks.core.metrics import SplitMetrics, noise_margin, rows_scored, split_metrics
from tasks.core.paired import PairedDifference, paired_bootstrap
from tasks.data.split import SplitReport
from tasks.model.predict import BASELINE_NAME, MODEL_INFO_FILE, PIPELINE_FILE

Family = Literal["finetune", "baseline"]


class BaselineReport(BaseModel):
    """The baseline's validation and test scores, and where its model and predictions are."""

    name: str
    val: SplitMetrics
    test: SplitMetrics
    seconds: float
    path: str | None = None  # the saved model folder
    val_predictions_path: str | None = None
    predictions_path: str | None = None  # test rows with `predicted`, like the fine-tune's


def tfidf_pipeline(seed: int) -> Any:
    """Word 1-2-gram and character 2-5-gram TF-IDF with a class-balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=200_000)),
        ]
    )
    return make_pipeline(
        features, LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced", random_state=seed)
    )


def save_baseline(model: Any, labels: list[str], folder: Path) -> Path:
    """The fitted pipeline as `model.pkl` and its `tuneloop.json` (family, labels) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / PIPELINE_FILE).open("wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    info = {"family": "baseline", "base_model": BASELINE_NAME, "labels": labels, "method": "tfidf"}
    (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return folder


def fit_tfidf_baseline(
    train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, seed: int, folder: Path | None = None
) -> BaselineReport:
    """Fit the baseline on the training split and score it; with a `folder`, save the model and the
    validation and test predictions there."""
    started = time.perf_counter()
    model = tfidf_pipeline(seed)
    model.fit(train["text"], train["label"])
    labels = sorted(train["label"].unique())
    predicted = {name: model.predict(frame["text"]).tolist() for name, frame in (("val", validation), ("test", test))}
    scores = {
        name: split_metrics(frame["label"].tolist(), predicted[name], labels)
        for name, frame in (("val", validation), ("test", test))
    }
    seconds = round(time.perf_counter() - started, 2)
    if folder is None:
        return BaselineReport(name=BASELINE_NAME, **scores, seconds=seconds)
    save_baseline(model, labels, folder / "model")
    paths = {}
    for name, frame in (("val", validation), ("test", test)):
        paths[name] = folder / f"{name}_predictions.csv"
        frame.assign(predicted=predicted[name]).to_csv(paths[name], index=False)
    return BaselineReport(
        name=BASELINE_NAME,
        **scores,
        seconds=seconds,
        path=str(folder / "model"),
        val_predictions_path=str(paths["val"]),
        predictions_path=str(paths["test"]),
    )


def held_out_baseline(train: pd.DataFrame, validation: pd.DataFrame, folds: int, seed: int) -> list[str]:
    """The baseline's held-out predictions of the rows a sweep's trials were judged on: the validation
    split (`folds` 0), or each row of train + validation predicted out of fold on the trials' own
    folds (tasks/model/crossval.py), in that pool's row order."""
    import numpy as np

    from tasks.data.load import text_groups
    from tasks.model.crossval import fold_numbers

    if not folds:
        return tfidf_pipeline(seed).fit(train["text"], train["label"]).predict(validation["text"]).tolist()
    pool = pd.concat([train, validation], ignore_index=True)
    numbers = fold_numbers(pool["label"], text_groups(pool["text"]), folds, seed)
    predicted = np.empty(len(pool), dtype=object)
    for fold in range(folds):
        held = numbers == fold
        model = tfidf_pipeline(seed).fit(pool["text"][~held], pool["label"][~held])
        predicted[held] = model.predict(pool["text"][held])
    return [str(label) for label in predicted]


@task(name="fit_baseline")
def fit_baseline(splits: SplitReport, seed: int, folder: Path | None = None) -> BaselineReport:
    """Fit and score the TF-IDF + logistic-regression baseline on the same splits (saved in `folder`)."""
    train, validation, test = (pd.read_parquet(ref.path) for ref in (splits.train, splits.validation, splits.test))
    report = fit_tfidf_baseline(train, validation, test, seed, folder)
    get_run_logger().info(
        "Baseline %s: val f1_macro %.4f, test f1_macro %.4f (%.1f s)",
        report.name,
        report.val.f1_macro,
        report.test.f1_macro,
        report.seconds,
    )
    return report


def beats_baseline(model_val: SplitMetrics, baseline: BaselineReport, metric: str) -> bool:
    """Whether the fine-tuned model scores higher than the baseline on validation."""
    return getattr(model_val, metric) > getattr(baseline.val, metric)


def baseline_verdict(model_val: SplitMetrics, baseline: BaselineReport, metric: str) -> str:
    """One plain sentence: does the fine-tuned model beat the baseline on validation, and can the
    validation split tell?"""
    ours, theirs = getattr(model_val, metric), getattr(baseline.val, metric)
    rows = rows_scored(model_val)
    margin = noise_margin(max(ours, theirs), rows)
    if abs(ours - theirs) < margin:
        return (
            f"The fine-tuned model and the {baseline.name} baseline are within the validation split's noise on "
            f"{metric}: {ours:.4f} vs {theirs:.4f} (+-{margin:.4f} on {rows} rows). This split cannot tell them "
            "apart; give validation more rows (split.validation_fraction) to know which is better."
        )
    if beats_baseline(model_val, baseline, metric):
        return (
            f"The fine-tuned model beats the {baseline.name} baseline on validation {metric}: "
            f"{ours:.4f} vs {theirs:.4f}."
        )
    return (
        f"The fine-tuned model does NOT beat the {baseline.name} baseline on validation {metric}: {ours:.4f} vs "
        f"{theirs:.4f}. The cheaper baseline is as good here; consider it, more data, or another base model."
    )


class FamilyChoice(BaseModel):
    """Which model family a run offers to the registry, and why."""

    family: Family
    difference: PairedDifference | None  # fine-tune minus baseline on validation, row by row
    blocked: str | None = None  # why the fine-tune may not be promoted although it is offered
    reason: str


def choose_family(
    truth: list[str], finetuned: list[str], baseline: list[str], config: PromotionConfig, scored_by: str
) -> FamilyChoice:
    """The baseline is offered instead of the fine-tune when it is better on validation with
    `promotion.confidence` (a paired bootstrap of the same rows); a fine-tune below it within noise is
    offered but blocked. `promotion.baseline_competes=false`: always the fine-tune."""
    if not config.baseline_competes:
        return FamilyChoice(family="finetune", difference=None, reason="the baseline does not compete")
    difference = paired_bootstrap(truth, finetuned, baseline, config.metric, config.confidence).overall
    said = f"fine-tune minus baseline on validation {config.metric} ({scored_by}): {difference.interval()}"
    if difference.high < 0:
        return FamilyChoice(
            family="baseline",
            difference=difference,
            reason=f"the {BASELINE_NAME} baseline beats the fine-tune beyond noise ({said}), so the baseline is "
            "the candidate",
        )
    if difference.delta < 0:
        return FamilyChoice(
            family="finetune",
            difference=difference,
            blocked=f"the fine-tune scores below the {BASELINE_NAME} baseline on validation ({said})",
            reason=f"the fine-tune is the candidate, but scores below the baseline ({said})",
        )
    return FamilyChoice(family="finetune", difference=difference, reason=f"the fine-tune is the candidate ({said})")


@task(name="choose_model_family")
def choose_model_family(
    validation_predictions: str, baseline: BaselineReport, config: PromotionConfig, scored_by: str
) -> FamilyChoice:
    """Fine-tune or baseline: which one this run registers (both predicted the same validation rows)."""
    ours = pd.read_csv(validation_predictions, dtype=str, keep_default_na=False)
    theirs = pd.read_csv(str(baseline.val_predictions_path), dtype=str, keep_default_na=False)
    choice = choose_family(
        ours["label"].tolist(), ours["predicted"].tolist(), theirs["predicted"].tolist(), config, scored_by
    )
    get_run_logger().info("Model family: %s", choice.reason)
    return choice
