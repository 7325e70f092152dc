from pathlib import Path

import pytest

from tasks.config.eval import EvalConfig
from tasks.core.errors import QualityGateError
from tasks.core.metrics import SplitMetrics, classification_metrics
from tasks.model.evaluate import EvalReport, check_quality, plot_confusion_matrix


def test_metrics_match_hand_computed_values() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "b", "a"]
    scores = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    overall, per_class = scores["overall"], scores["per_class"]
    assert overall["accuracy"] == pytest.approx(4 / 6)
    # a: p=2/3 r=2/3 f=2/3; b: p=2/3 r=1 f=0.8; c: 0
    assert per_class["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert overall["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert overall["f1_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 0.8 + 0) / 6)


def test_confusion_matrix_is_a_png(tmp_path: Path) -> None:
    path = plot_confusion_matrix(["a", "b", "b"], ["a", "a", "b"], ["a", "b"], tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def report(f1: float) -> EvalReport:
    metrics = scores_on(f1, 100)
    return EvalReport(val=metrics, test=metrics, confusion_matrix_path="", report_path="", predictions_path="")


def test_quality_gate_is_off_by_default_and_names_the_bar() -> None:
    check_quality(report(0.1), EvalConfig())
    check_quality(report(0.9), EvalConfig(min_f1=0.8))
    with pytest.raises(QualityGateError, match=r"Test f1_macro 0.5000 is below eval.min_f1=0.8"):
        check_quality(report(0.5), EvalConfig(min_f1=0.8))


def scores_on(f1: float, rows: int) -> SplitMetrics:
    """A split's scores: macro F1 `f1` measured on `rows` texts of two classes."""
    half = {"precision": f1, "recall": f1, "f1": f1, "support": rows // 2}
    return SplitMetrics(
        accuracy=f1,
        precision_macro=f1,
        recall_macro=f1,
        f1_macro=f1,
        precision_weighted=f1,
        recall_weighted=f1,
        f1_weighted=f1,
        per_class={"ham": half, "spam": {**half, "support": rows - rows // 2}},
    )


def test_the_baseline_verdict_says_when_validation_cannot_tell_the_models_apart() -> None:
    from tasks.model.baseline import BaselineReport, baseline_verdict

    def verdict(ours: float, theirs: float, rows: int) -> str:
        baseline = BaselineReport(name="tfidf", val=scores_on(theirs, rows), test=scores_on(theirs, rows), seconds=1)
        return baseline_verdict(scores_on(ours, rows), baseline, "f1_macro")

    # SMS, split seed 42: both models make the same 2 errors in 589 validation texts.
    assert "within the validation split's noise" in verdict(0.9925, 0.9924, 589)
    assert "+-0.0071 on 589 rows" in verdict(0.9925, 0.9924, 589)
    assert "within the validation split's noise" in verdict(0.90, 0.93, 200)  # 2 errors of 0.93 on 200: 0.036
    assert verdict(0.90, 0.93, 2000).startswith("The fine-tuned model does NOT beat")
    assert verdict(0.97, 0.94, 2000).startswith("The fine-tuned model beats")
    assert verdict(0.95, 0.80, 200).startswith("The fine-tuned model beats")
