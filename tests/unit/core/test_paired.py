"""The paired bootstrap that promotion and the model-family choice decide on: its point estimate is
scikit-learn's difference, a one-text difference is not significant, a large one is, and a class's
drop needs enough texts (the measurement behind promotion.min_class_support)."""

from __future__ import annotations

import random

import pytest

from tasks.core.metrics import split_metrics
from tasks.core.paired import paired_bootstrap

LABELS = [f"intent{i}" for i in range(6)]


def noisy(truth: list[str], accuracy: float, seed: int) -> list[str]:
    """Predictions right with probability `accuracy`, otherwise a random label."""
    chance = random.Random(seed)
    return [label if chance.random() < accuracy else chance.choice(LABELS) for label in truth]


@pytest.fixture(scope="module")
def truth() -> list[str]:
    chance = random.Random(0)
    return [chance.choice(LABELS) for _ in range(300)]


@pytest.mark.parametrize("metric", ["f1_macro", "f1_weighted", "accuracy"])
def test_the_point_estimate_is_the_difference_of_the_scores(truth: list[str], metric: str) -> None:
    first, second = noisy(truth, 0.9, 1), noisy(truth, 0.7, 2)
    labels = sorted(set(truth))
    expected = getattr(split_metrics(truth, first, labels), metric) - getattr(
        split_metrics(truth, second, labels), metric
    )
    result = paired_bootstrap(truth, first, second, metric)
    assert result.overall.delta == pytest.approx(expected, abs=1e-6)
    assert result.overall.low < result.overall.delta < result.overall.high
    assert result.support == {label: truth.count(label) for label in labels}


def test_a_one_text_difference_is_not_significant_and_a_large_one_is(truth: list[str]) -> None:
    champion = noisy(truth, 0.85, 3)
    one_better = list(champion)
    wrong = next(index for index, (real, said) in enumerate(zip(truth, champion, strict=True)) if real != said)
    one_better[wrong] = truth[wrong]
    small = paired_bootstrap(truth, one_better, champion, "f1_macro").overall
    assert small.delta > 0, "the candidate is better on these rows..."
    assert small.low <= 0, "...but one text cannot show it"
    large = paired_bootstrap(truth, list(truth), champion, "f1_macro").overall
    assert large.low > 0.05
    worse = paired_bootstrap(truth, champion, list(truth), "f1_macro").overall
    assert worse.high < -0.05


def test_the_interval_narrows_with_more_rows() -> None:
    chance = random.Random(5)
    widths = []
    for rows in (60, 600):
        truth = [chance.choice(LABELS) for _ in range(rows)]
        result = paired_bootstrap(truth, noisy(truth, 0.9, rows), noisy(truth, 0.8, rows + 1), "accuracy").overall
        widths.append(result.high - result.low)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize(("support", "significant"), [(4, False), (6, False), (8, True), (12, True)])
def test_a_class_losing_half_its_texts_is_significant_from_eight_texts(support: int, significant: bool) -> None:
    """The measurement behind promotion.min_class_support=8: below it, even a class losing half its
    texts is not a significant drop at 0.95, so a drop there says nothing."""
    truth = ["small"] * support + ["big"] * 200
    champion = list(truth)
    candidate = ["big"] * (support // 2) + truth[support // 2 :]
    drop = paired_bootstrap(truth, candidate, champion, "f1_macro").per_class["small"]
    assert drop.delta < -0.3
    assert (drop.high < 0) is significant


def test_rows_must_pair() -> None:
    with pytest.raises(ValueError, match="same, non-empty rows"):
        paired_bootstrap(["a", "b"], ["a"], ["a", "b"], "accuracy")
