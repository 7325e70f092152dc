"""The validate-data and train flows under a real Prefect server."""

from pathlib import Path

import pandas as pd
import pytest
from prefect import flow

from flows.train import train
from flows.validate import validate_data
from tasks.config.data import DataConfig
from tasks.config.load import load_config
from tasks.config.split import SplitConfig
from tasks.core.errors import DataValidationError
from tasks.data.load import DatasetRef, write_table
from tasks.data.split import split_dataset
from tests.helpers import ROOT
from tests.helpers.artifacts import read_artifact_markdown
from tests.helpers.tables import clean_table, write_csv

SAMPLE_CONFIG = ROOT / "data" / "sample" / "config.yaml"


def sample_config(**overrides: str):
    config = load_config(SAMPLE_CONFIG, [f"{key}={value}" for key, value in overrides.items()])
    return config.model_copy(update={"data": config.data.model_copy(update={"path": str(ROOT / config.data.path)})})


def test_validate_flow_on_the_sample_quarantines_the_dirty_rows(tuneloop_home: Path) -> None:
    state = validate_data(config=sample_config(), return_state=True)
    report = state.result()
    data = report.data
    assert data.passed and report.test is None
    assert data.rows == 1107 and data.quarantined_rows == 7 and data.clean_rows == 1100
    folder = Path(data.folder)
    assert folder.is_relative_to(tuneloop_home / "runs")
    reasons = pd.read_csv(data.quarantine_path).set_index("id")["reason"]
    assert reasons["T1104"] == "label is not one of data.labels"
    assert reasons["T1105"].startswith("text length outside")
    assert {"T1101", "T1102", "T1103", "T1106", "T1107"} <= set(reasons.index)
    assert (folder / "data_docs" / "index.html").is_file()
    markdown = read_artifact_markdown(state.state_details.flow_run_id, "data-validation")
    assert "Data validation passed" in markdown and "label_conflict" in markdown


def test_failed_gate_fails_the_flow_and_keeps_the_report(tmp_path: Path, tuneloop_home: Path) -> None:
    path = write_csv(clean_table().assign(label="billing"), tmp_path / "one_class.csv")
    state = validate_data(config=load_config(None, [f"data.path={path}", "data.id_column=id"]), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataValidationError, match="min_classes"):
        state.result()
    summaries = list((tuneloop_home / "runs").glob("*/validation/summary.json"))
    assert len(summaries) == 1 and '"passed": false' in summaries[0].read_text()


def test_train_flow_writes_leak_free_splits_of_the_clean_rows(tiny_bert: Path) -> None:
    result = train(config=sample_config(**{"model.candidates": f"[{tiny_bert}]", "train.epochs": "1"}))
    splits = result.splits
    assert splits.overlap == {"train/validation": 0, "train/test": 0, "validation/test": 0}
    assert splits.train.rows + splits.validation.rows + splits.test.rows == 1100
    for name in ("train", "validation", "test"):
        frame = pd.read_parquet(getattr(splits, name).path)
        assert set(frame["label"]) == {"account", "billing", "shipping", "technical"}
    assert Path(splits.summary_path).is_file()


def test_given_test_file_is_validated_and_used_as_the_test_split(tmp_path: Path, tiny_bert: Path) -> None:
    table = clean_table(30)
    main, test = table.iloc[::2].copy(), table.iloc[1::2].head(30).copy()
    config = load_config(
        None,
        [
            f"data.path={write_csv(main, tmp_path / 'main.csv')}",
            f"data.test_path={write_csv(test, tmp_path / 'test.csv')}",
            "data.id_column=id",
            "validation.min_rows=20",
            "validation.min_examples_per_class=5",
            f"model.candidates=[{tiny_bert}]",
            "train.epochs=1",
        ],
    )
    result = train(config=config)
    assert result.data.test is not None and result.data.test.passed
    assert sorted(pd.read_parquet(result.splits.test.path)["id"]) == sorted(test["id"])


def test_split_task_is_cached_on_its_inputs(tmp_path: Path) -> None:
    ref: DatasetRef = write_table(clean_table(), tmp_path / "clean.parquet")

    @flow
    def split_twice() -> list[str]:
        first = split_dataset(ref, SplitConfig(), tmp_path / "splits", return_state=True)
        second = split_dataset(ref, SplitConfig(), tmp_path / "splits", return_state=True)
        return [first.name, second.name]

    assert split_twice() == ["Completed", "Cached"]


def test_load_cache_notices_a_changed_file(tmp_path: Path) -> None:
    from tasks.data.load import load_dataset

    path = tmp_path / "data.csv"
    write_csv(clean_table(), path)

    @flow
    def load_after_change() -> list[int]:
        before = load_dataset(str(path), DataConfig(path=str(path)), tmp_path / "out.parquet")
        write_csv(clean_table(11), path)
        after = load_dataset(str(path), DataConfig(path=str(path)), tmp_path / "out.parquet")
        return [before.rows, after.rows]

    assert load_after_change() == [60, 33]


def test_a_cache_from_another_code_layout_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached results are pickles of our classes under their module paths: after a change of layout
    (CODE_LAYOUT raised) the steps compute again instead of reading results of the old layout."""
    from tasks.core import workspace

    ref: DatasetRef = write_table(clean_table(), tmp_path / "clean.parquet")

    @flow
    def split_once() -> str:
        return split_dataset(ref, SplitConfig(), tmp_path / "splits", return_state=True).name

    assert split_once() == "Completed"
    assert split_once() == "Cached"
    monkeypatch.setattr(workspace, "CODE_LAYOUT", "layout-next")
    assert split_once() == "Completed"
