"""Classification scores: accuracy, precision, recall and F1 (macro, weighted, per class)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

METRIC_KEYS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
)


class SplitMetrics(BaseModel):
    """Scores on one split."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    per_class: dict[str, dict[str, float]]


def classification_metrics(y_true: Any, y_pred: Any, labels: list[Any]) -> dict[str, Any]:
    """Overall scores (the METRIC_KEYS) and per-class precision, recall, F1 and support."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    overall: dict[str, float] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        overall.update(
            {f"precision_{average}": float(precision), f"recall_{average}": float(recall), f"f1_{average}": float(f1)}
        )
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        str(label): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    return {"overall": overall, "per_class": per_class}


def sampling_error(score: float, rows: int) -> float:
    """One standard error of a score near `score` (a rate such as accuracy or F1) measured on `rows`
    texts: sqrt(score * (1 - score) / rows); 0 without rows."""
    score = min(max(score, 0.0), 1.0)
    return (score * (1 - score) / rows) ** 0.5 if rows > 0 else 0.0


# How many sampling errors apart two scores must be for one to count as better (or a target as met
# or missed for sure): closer than that, the split they were measured on cannot tell them apart.
NOISE_ERRORS = 2.0


def noise_margin(score: float, rows: int) -> float:
    """NOISE_ERRORS sampling errors of a score near `score` measured on `rows` texts."""
    return NOISE_ERRORS * sampling_error(score, rows)


def rows_scored(metrics: SplitMetrics) -> int:
    """How many texts a split's scores were measured on (the classes' supports)."""
    return int(sum(scores.get("support", 0) for scores in metrics.per_class.values()))


def split_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> SplitMetrics:
    """classification_metrics as a SplitMetrics."""
    scores = classification_metrics(y_true, y_pred, labels)
    return SplitMetrics(**scores["overall"], per_class=scores["per_class"])
