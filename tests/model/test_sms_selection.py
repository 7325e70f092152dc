"""Selection figures on real data: the TF-IDF baseline and MiniLM's linear probe on the SMS spam split."""

from pathlib import Path

import pytest

from tasks.config.data import DataConfig
from tasks.config.split import SplitConfig
from tasks.data.load import load_table
from tasks.data.split import split_table, write_splits
from tasks.model.baseline import fit_tfidf_baseline
from tasks.model.resolve import resolve_model
from tasks.model.select import linear_probe, probe_rows

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_baseline_and_probe_on_sms(sms_spam: Path, tmp_path: Path) -> None:
    config = DataConfig(path=str(sms_spam), text_columns=["SMS"], label_column="Label")
    splits, removed = split_table(load_table(config.path, config), SplitConfig())
    report = write_splits(splits, removed, SplitConfig(), tmp_path)
    baseline = fit_tfidf_baseline(splits["train"], splits["validation"], splits["test"], seed=42)
    train, validation = probe_rows(report, 500, seed=42)  # the probe's default is 2000: shrunk for time
    probe = linear_probe(
        resolve_model("sentence-transformers/all-MiniLM-L6-v2").path, train, validation, "f1_macro", 64, seed=42
    )
    print(
        f"SMS baseline val f1_macro {baseline.val.f1_macro:.4f}, test {baseline.test.f1_macro:.4f}; "
        f"MiniLM linear probe (500 rows) val f1_macro {probe:.4f}"
    )
    assert baseline.val.f1_macro > 0.85 and baseline.test.f1_macro > 0.85
    assert 0.7 < probe <= 1.0
