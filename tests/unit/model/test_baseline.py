"""The TF-IDF baseline as a model family: which family a run offers (a paired test on validation,
not the raw difference), and the saved baseline answering like a fine-tune through tuneloop's own
loader and through MLflow's pyfunc (label and score columns)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.config.promotion import PromotionConfig
from tasks.model.baseline import choose_family, fit_tfidf_baseline
from tasks.model.predict import load_classifier, predict_texts
from tests.helpers import ROOT

TRUTH = ["a"] * 60 + ["b"] * 60
BASELINE = ["b" if index % 10 == 0 else label for index, label in enumerate(TRUTH)]  # 12 wrong


def test_a_baseline_better_beyond_noise_is_the_candidate() -> None:
    finetuned = ["b" if index % 3 == 0 else label for index, label in enumerate(TRUTH)]  # 40 wrong
    choice = choose_family(TRUTH, finetuned, BASELINE, PromotionConfig(), "final model")
    assert choice.family == "baseline" and choice.difference is not None and choice.difference.high < 0
    assert "baseline beats the fine-tune beyond noise" in choice.reason


def test_a_fine_tune_slightly_below_the_baseline_is_offered_but_blocked() -> None:
    finetuned = list(BASELINE)
    finetuned[1] = "b"  # one more text wrong than the baseline: within noise
    choice = choose_family(TRUTH, finetuned, BASELINE, PromotionConfig(), "final model")
    assert choice.family == "finetune" and choice.blocked and "below" in choice.blocked
    better = choose_family(TRUTH, list(TRUTH), BASELINE, PromotionConfig(), "final model")
    assert better.family == "finetune" and better.blocked is None


def test_without_competition_the_fine_tune_is_always_offered() -> None:
    choice = choose_family(TRUTH, ["b"] * 120, BASELINE, PromotionConfig(baseline_competes=False), "final model")
    assert choice.family == "finetune" and choice.blocked is None


@pytest.fixture(scope="module")
def saved_baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    table = pd.read_csv(ROOT / "data/sample/support_tickets.csv").fillna("")
    table = table.assign(text=table["subject"] + " " + table["body"], label=table["category"])
    folder = tmp_path_factory.mktemp("baseline")
    report = fit_tfidf_baseline(table[:500], table[500:700], table[700:900], 0, folder)
    assert report.path and Path(report.path, "model.pkl").is_file()
    written = pd.read_csv(str(report.predictions_path))
    assert len(written) == 200 and {"label", "predicted"} <= set(written.columns)
    return Path(report.path), table[900:920]


def test_a_saved_baseline_predicts_through_tuneloops_loader(saved_baseline: tuple[Path, pd.DataFrame]) -> None:
    folder, rows = saved_baseline
    results = predict_texts(load_classifier(folder), rows["text"].tolist())
    assert len(results) == 20
    for result in results:
        assert result["label"] in {"account", "billing", "shipping", "technical"}
        assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert result["probabilities"][result["label"]] == max(result["probabilities"].values())


def test_the_baseline_mlflow_model_answers_with_label_and_score(
    saved_baseline: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    import mlflow.pyfunc

    from tasks.tracking.model import save_baseline_mlflow_model

    folder, rows = saved_baseline
    texts = rows["text"].tolist()
    packaged = save_baseline_mlflow_model(folder, tmp_path / "mlflow-model", texts[0])
    assert {"sklearn", "python_function"} <= set(mlflow.models.Model.load(str(packaged)).flavors)
    answer = mlflow.pyfunc.load_model(str(packaged)).predict(texts)
    assert list(answer.columns) == ["label", "score"]
    ours = predict_texts(load_classifier(packaged), texts)
    assert answer["label"].tolist() == [row["label"] for row in ours], "the same answer everywhere"
    assert answer["score"].tolist() == pytest.approx([row["probabilities"][row["label"]] for row in ours], abs=1e-5)


def test_score_csvs_are_spreadsheet_safe(tmp_path: Path) -> None:
    """Texts starting with = + - @ would run as formulas in a spreadsheet: written with a leading quote."""
    from tasks.model.score import write_predictions

    frame = pd.DataFrame({"id": ["=1+2", "7"], "label": ["billing", "@SUM(A1)"], "score": [0.5, 0.9]})
    frame["text"] = ["-2+3 is my balance", "hello"]
    written = pd.read_csv(write_predictions(frame, tmp_path / "out.csv"), dtype=str)
    assert written["id"].tolist() == ["'=1+2", "7"] and written["label"].tolist() == ["billing", "'@SUM(A1)"]
    assert written["text"].tolist() == ["'-2+3 is my balance", "hello"] and written["score"].tolist() == ["0.5", "0.9"]
    parquet = pd.read_parquet(write_predictions(frame, tmp_path / "out.parquet"))
    assert parquet["id"].tolist() == ["=1+2", "7"], "Parquet keeps the values as they are"


def test_the_held_out_baseline_never_predicts_a_row_it_was_fit_on() -> None:
    """Out of fold on the trials' folds, in the pool's row order: each text is its own word and its
    label is arbitrary, so a model that saw a row gets it right and one that did not is at chance."""
    import random

    from tasks.model.baseline import held_out_baseline

    labels = ["a", "b"] * 60
    random.Random(0).shuffle(labels)
    frame = pd.DataFrame({"text": [f"w{index} common" for index in range(120)], "label": labels})
    train, validation = frame[:90], frame[90:]
    held = held_out_baseline(train, validation, folds=0, seed=0)
    pooled = held_out_baseline(train, validation, folds=3, seed=0)
    assert len(held) == 30 and len(pooled) == 120
    right = sum(mine == truth for mine, truth in zip(pooled, frame["label"], strict=True))
    assert right < 90, "a row predicted by a model fit on it would be right: these are held out"
    assert pooled == held_out_baseline(train, validation, folds=3, seed=0), "seeded"
