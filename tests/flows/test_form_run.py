"""A run started from the Prefect form with the user's own file: the form's defaults (what the UI
pre-fills and sends back) plus a changed path and columns are enough; the sample's id column and
labels are not inherited. A wrong column named in the form is answered with the form field to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.utilities.callables import parameter_schema

from flows.train import train
from tasks.config.pipeline import PipelineConfig
from tests.helpers import ROOT


def form_defaults() -> dict[str, Any]:
    """The train form's pre-filled values, as the UI sends them when nothing is changed."""
    return parameter_schema(train).model_dump()["properties"]["config"]["default"]


@pytest.fixture
def own_file(tmp_path: Path) -> Path:
    """The sample's texts under other column names, without its ticket_id column."""
    sample = pd.read_csv(ROOT / "data/sample/support_tickets.csv").fillna("")
    sample = sample[sample["category"].isin(["account", "billing", "shipping", "technical"])]  # no typos here
    path = tmp_path / "questions.csv"
    pd.DataFrame({"question": sample["subject"] + " " + sample["body"], "intent": sample["category"]}).to_csv(
        path, index=False
    )
    return path


def test_the_form_leaves_the_data_dependent_fields_unset() -> None:
    data = form_defaults()["data"]
    assert data["path"] == "data/sample/support_tickets.csv"
    assert data["text_columns"] is None and data["label_column"] is None
    assert data["id_column"] is None and data["labels"] is None
    sample = PipelineConfig.model_validate(form_defaults()).data
    assert sample.text_column_names == ["subject", "body"], "unset means the sample's"
    assert sample.id_column_name == "ticket_id" and sample.label_column_name == "category"


def test_a_form_run_with_only_the_path_and_columns_changed_completes(
    tiny_bert: Path, tuneloop_home: Path, own_file: Path
) -> None:
    form = form_defaults()
    form["data"].update(path=str(own_file), text_columns=["question"], label_column="intent")
    form["model"]["candidates"] = [str(tiny_bert)]  # the tiny model keeps the test fast
    form["train"].update(epochs=1, batch_size=64, max_length=64)
    result = train(config=PipelineConfig.model_validate(form))
    assert result.data.data.rows > 1000 and result.promotion is not None
    assert sorted(result.model.labels) == ["account", "billing", "shipping", "technical"]


def test_a_wrong_column_in_the_form_names_the_field_to_change(tuneloop_home: Path, own_file: Path) -> None:
    form = form_defaults()
    form["data"].update(path=str(own_file), text_columns=["question"], label_column="category")
    state = train(config=PipelineConfig.model_validate(form), return_state=True)
    assert state.is_failed()
    message = str(state.message)
    assert "'category' (data.label_column) not found" in message and "'question', 'intent'" in message
    assert "set data.label_column to the column with the label" in message and "Prefect form" in message
