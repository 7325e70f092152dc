"""The contract and the split on real data: the SMS Spam Collection (5,574 messages, 403 duplicates)."""

from pathlib import Path

import pytest

from tasks.config.data import DataConfig
from tasks.config.split import SplitConfig
from tasks.config.validation import ValidationConfig
from tasks.data.load import load_table, table_sha256
from tasks.data.split import overlap_counts, split_table
from tasks.data.validate import validate_table

pytestmark = pytest.mark.realdata


def load_sms(path: Path):
    config = DataConfig(path=str(path), text_columns=["SMS"], label_column="Label", labels=["ham", "spam"])
    return load_table(config.path, config), config


def test_sms_passes_the_gate_and_its_duplicates_are_found(sms_spam: Path, tmp_path: Path) -> None:
    table, config = load_sms(sms_spam)
    assert len(table) == 5574
    report = validate_table(table, str(sms_spam), table_sha256(table), ValidationConfig(), config, tmp_path)
    assert report.passed, report.problems
    duplicates = next(check for check in report.checks if check.check == "duplicate_texts")
    assert not duplicates.success and duplicates.severity == "warning"
    extra_copies = int(duplicates.detail.split()[0])
    assert extra_copies >= 403, duplicates.detail


def test_sms_split_has_zero_overlap_where_a_random_split_leaks(sms_spam: Path) -> None:
    from sklearn.model_selection import train_test_split

    table, _ = load_sms(sms_spam)
    train, rest = train_test_split(table, test_size=0.2, stratify=table["label"], random_state=0)
    assert overlap_counts({"train": train, "rest": rest})["train/rest"] > 50
    splits, _ = split_table(table, SplitConfig())
    assert overlap_counts(splits) == {"train/validation": 0, "train/test": 0, "validation/test": 0}
    assert sum(len(frame) for frame in splits.values()) == len(table)
    for frame in splits.values():
        assert 0.10 < (frame["label"] == "spam").mean() < 0.16
