"""The text-classification contract: a clean table passes, each broken table fails the check it should."""

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from expectations import load_suite
from tasks.config.data import DataConfig
from tasks.config.validation import ValidationConfig
from tasks.core.errors import ConfigError, DataValidationError
from tasks.data.load import table_sha256
from tasks.data.validate import ValidationReport, raise_if_failed, validate_table
from tests.helpers.tables import LABELS, clean_table

SMALL = ValidationConfig(min_rows=30, min_examples_per_class=10, max_text_length=500)


def run(
    table: pd.DataFrame, folder: Path, validation: ValidationConfig = SMALL, data: DataConfig | None = None
) -> ValidationReport:
    data = data or DataConfig(path="fixture.csv")  # not the sample's path: any label
    return validate_table(table, "fixture", table_sha256(table), validation, data, folder)


def failed(report: ValidationReport) -> set[str]:
    return {check.check for check in report.checks if not check.success}


def test_clean_table_passes_every_check(tmp_path: Path) -> None:
    report = run(clean_table(), tmp_path, data=DataConfig(path="fixture.csv", labels=LABELS))
    assert report.passed and not failed(report)
    assert report.clean_rows == report.rows == 60
    assert report.quarantine_path is None
    suite_checks = {expectation["meta"]["check"] for expectation in load_suite(SMALL.suite)["expectations"]}
    assert {check.check for check in report.checks} == suite_checks
    assert json.loads(Path(report.summary_path).read_text())["passed"] is True
    assert Path(report.data_docs_path).is_file()
    assert pd.read_parquet(report.clean.path).shape == (60, 3)


def set_row(column: str, value: object, rows: int = 1) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[: rows - 1, column] = value
        return table

    return change


def conflict(table: pd.DataFrame) -> pd.DataFrame:
    table.loc[1, "text"] = table.loc[0, "text"].upper() + "  "
    table.loc[1, "label"] = "shipping" if table.loc[0, "label"] != "shipping" else "billing"
    return table


ROW_CASES = {
    "text_not_null": set_row("text", None),
    "text_not_blank": set_row("text", "   \t "),
    "text_length": set_row("text", "x" * 100_000),
    "label_not_null": set_row("label", None),
    "label_allowed": set_row("label", "refnd"),
    "label_conflict": conflict,
}


@pytest.mark.parametrize("check", list(ROW_CASES))
def test_bad_row_fails_its_check_and_is_quarantined(tmp_path: Path, check: str) -> None:
    table = ROW_CASES[check](clean_table())
    report = run(table, tmp_path, data=DataConfig(path="fixture.csv", labels=LABELS))
    assert failed(report) == {check}
    assert report.passed, "a few bad rows are set aside, not fatal"
    quarantine = pd.read_csv(report.quarantine_path)
    assert len(quarantine) == report.quarantined_rows == (2 if check == "label_conflict" else 1)
    assert quarantine["reason"].str.len().min() > 5
    assert report.clean_rows == 60 - report.quarantined_rows
    assert any(check in warning for warning in report.warnings)


def test_too_many_bad_rows_stop_the_run_listing_every_check(tmp_path: Path) -> None:
    table = set_row("label", None, rows=5)(set_row("text", "", rows=1)(clean_table()))
    report = run(table, tmp_path)
    assert not report.passed and report.clean is None
    with pytest.raises(DataValidationError) as caught:
        raise_if_failed(report)
    message = str(caught.value)
    assert "5 of 60 rows" in message and "label is missing" in message and "text is blank" in message
    assert "validation.max_quarantine_fraction" in message
    assert len(pd.read_csv(report.quarantine_path)) == 5


TABLE_CASES = {
    "min_rows": (lambda table: table.iloc[::5], ValidationConfig(min_rows=30, min_examples_per_class=1)),
    "min_classes": (lambda table: table.assign(label="billing"), SMALL),
    "min_examples_per_class": (
        lambda table: pd.concat([table, pd.DataFrame([{"id": "x1", "text": "one lonely text", "label": "rare"}])]),
        SMALL,
    ),
    "unique_ids": (set_row("id", "same-id", rows=3), SMALL),
}


@pytest.mark.parametrize("check", list(TABLE_CASES))
def test_table_problem_blocks_with_a_named_reason(tmp_path: Path, check: str) -> None:
    change, validation = TABLE_CASES[check]
    report = run(change(clean_table()).reset_index(drop=True), tmp_path, validation)
    assert failed(report) == {check}
    assert not report.passed
    assert report.problems[0].startswith(f"{check}: ")


def test_messages_name_the_small_class_and_the_single_class(tmp_path: Path) -> None:
    one_class = run(clean_table().assign(label="billing"), tmp_path / "a")
    assert "1 class(es) ['billing']; at least 2" in one_class.problems[0]
    rare = TABLE_CASES["min_examples_per_class"][0](clean_table()).reset_index(drop=True)
    assert "'rare' has 1 (each class needs at least 10)" in run(rare, tmp_path / "b").problems[0]


def test_duplicate_texts_are_a_warning_only(tmp_path: Path) -> None:
    table = clean_table()
    table.loc[1, "text"] = table.loc[0, "text"]
    table.loc[1, "label"] = table.loc[0, "label"]
    report = run(table, tmp_path)
    assert failed(report) == {"duplicate_texts"}
    assert report.passed and report.quarantined_rows == 0
    assert "1 rows repeat another row's text" in report.warnings[0]


def test_unknown_suite_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No expectation suite 'nope'.*text_classification"):
        run(clean_table(), tmp_path, SMALL.model_copy(update={"suite": "nope"}))
