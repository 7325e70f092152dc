"""Two classifiers compared on the same rows: a paired bootstrap of the difference of a score
(accuracy, macro or weighted F1) and of each class's F1. Resampling rows, not scores, keeps the
pairing: both models are scored on every resample, so the spread is that of the difference (a few
texts that both get right or wrong add no noise). Promotion and the choice of model family decide
on these intervals, not on raw differences."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel

# Resamples of the test rows: the interval's ends move by about 0.002 between seeds at 2000.
RESAMPLES = 2000
CHUNK = 250


class PairedDifference(BaseModel):
    """First minus second on one score, with one-sided bounds at `confidence`: the difference is
    above `low` (and below `high`) with that confidence."""

    metric: str
    delta: float
    low: float
    high: float
    confidence: float
    rows: int

    def bounds(self) -> str:
        """The bounds in words, e.g. `+0.0120 to +0.0790`."""
        return f"{self.low:+.4f} to {self.high:+.4f}"

    def interval(self) -> str:
        """The difference and its bounds in words, e.g. `+0.0450 (95%: +0.0120 to +0.0790)`."""
        return f"{self.delta:+.4f} ({self.confidence:.0%}: {self.bounds()})"


class PairedComparison(BaseModel):
    """The overall score's difference and each class's F1 difference (with its support)."""

    overall: PairedDifference
    per_class: dict[str, PairedDifference]
    support: dict[str, int]


def class_counts(weights: Any, truth: Any, predicted: Any, classes: int) -> tuple[Any, Any, Any]:
    """True positives, false positives and false negatives per class for each resample (row weights)."""
    import numpy as np

    hit = np.zeros((len(truth), classes), dtype=np.float32)
    said = np.zeros_like(hit)
    real = np.zeros_like(hit)
    rows = np.arange(len(truth))
    said[rows, predicted] = 1
    real[rows, truth] = 1
    hit[rows, truth] = truth == predicted
    tp = weights @ hit
    return tp, weights @ said - tp, weights @ real - tp


def resampled_scores(weights: Any, truth: Any, predicted: Any, classes: int, metric: str) -> tuple[Any, Any]:
    """(the metric, each class's F1) on every resample; a class absent from a resample scores 0."""
    import numpy as np

    tp, fp, fn = class_counts(weights, truth, predicted, classes)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    support = tp + fn
    present = support > 0
    if metric == "accuracy":
        score = tp.sum(axis=1) / weights.sum(axis=1)
    elif metric == "f1_weighted":
        score = (f1 * support).sum(axis=1) / np.maximum(support.sum(axis=1), 1)
    else:  # f1_macro over the classes present in the resample, as scikit-learn scores a split
        score = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return score, f1


def paired_bootstrap(
    truth: list[str],
    first: list[str],
    second: list[str],
    metric: str,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> PairedComparison:
    """First minus second on `metric` and on each true class's F1, over `resamples` bootstrap
    resamples of the rows (the same resample for both models)."""
    import numpy as np

    if not (len(truth) == len(first) == len(second)) or not truth:
        raise ValueError("paired_bootstrap needs the same, non-empty rows for both models")
    names = sorted(set(truth) | set(first) | set(second))
    code = {name: index for index, name in enumerate(names)}
    y, a, b = (np.array([code[label] for label in labels]) for labels in (truth, first, second))
    rows, classes = len(y), len(names)
    generator = np.random.default_rng(seed)
    deltas, class_deltas = [], []
    original = np.ones((1, rows), dtype=np.float32)
    for start in range(-1, resamples, CHUNK):  # the first "chunk" is the original rows: the point estimate
        count = min(CHUNK, resamples - start) if start >= 0 else 1
        weights = (
            original
            if start < 0
            else generator.multinomial(rows, np.full(rows, 1 / rows), size=count).astype(np.float32)
        )
        score_a, f1_a = resampled_scores(weights, y, a, classes, metric)
        score_b, f1_b = resampled_scores(weights, y, b, classes, metric)
        deltas.append(score_a - score_b)
        class_deltas.append(f1_a - f1_b)
    point, spread = deltas[0][0], np.concatenate(deltas[1:])
    class_point, class_spread = class_deltas[0][0], np.concatenate(class_deltas[1:])

    def difference(name: str, value: float, samples: Any) -> PairedDifference:
        low, high = np.quantile(samples, [1 - confidence, confidence])
        return PairedDifference(
            metric=name, delta=float(value), low=float(low), high=float(high), confidence=confidence, rows=rows
        )

    counts = Counter(truth)
    present = sorted(counts)
    return PairedComparison(
        overall=difference(metric, point, spread),
        per_class={
            label: difference("f1", class_point[code[label]], class_spread[:, code[label]]) for label in present
        },
        support={label: counts[label] for label in present},
    )
