"""The classical baseline every run is measured against: TF-IDF features and logistic regression.
A fine-tuned transformer that cannot beat it on validation is not worth its cost, and the run
report says so."""

from __future__ import annotations

import time

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.core.metrics import SplitMetrics, noise_margin, rows_scored, split_metrics
from tasks.data.split import SplitReport

BASELINE_NAME = "tfidf-logistic-regression"


class BaselineReport(BaseModel):
    """The baseline's validation and test scores."""

    name: str
    val: SplitMetrics
    test: SplitMetrics
    seconds: float


def fit_tfidf_baseline(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, seed: int) -> BaselineReport:
    """Word 1-2-gram and character 2-5-gram TF-IDF with a class-balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    started = time.perf_counter()
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=200_000)),
        ]
    )
    model = make_pipeline(
        features, LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced", random_state=seed)
    )
    model.fit(train["text"], train["label"])
    labels = sorted(train["label"].unique())
    scores = {
        name: split_metrics(frame["label"].tolist(), model.predict(frame["text"]).tolist(), labels)
        for name, frame in (("val", validation), ("test", test))
    }
    return BaselineReport(name=BASELINE_NAME, **scores, seconds=round(time.perf_counter() - started, 2))


@task(name="fit_baseline")
def fit_baseline(splits: SplitReport, seed: int) -> BaselineReport:
    """Fit and score the TF-IDF + logistic-regression baseline on the same splits."""
    train, validation, test = (pd.read_parquet(ref.path) for ref in (splits.train, splits.validation, splits.test))
    report = fit_tfidf_baseline(train, validation, test, seed)
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
