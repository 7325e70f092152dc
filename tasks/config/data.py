"""Where the labelled text is and which columns hold text, label and id. The defaults describe the
bundled sample completely; any other path starts from generic columns (`text`, `label`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DataFormat = Literal["auto", "csv", "tsv", "jsonl", "parquet", "disk", "hub"]


# The bundled sample, which the defaults describe completely; any other data.path starts from the
# generic columns instead, so `--data mine.csv` does not inherit the sample's columns and labels.
SAMPLE_PATH = "data/sample/support_tickets.csv"


SAMPLE_COLUMNS: dict[str, Any] = {
    "text_columns": ["subject", "body"],
    "label_column": "category",
    "id_column": "ticket_id",
    "labels": ["account", "billing", "shipping", "technical"],
}


GENERIC_COLUMNS: dict[str, Any] = {"text_columns": ["text"], "label_column": "label", "id_column": None, "labels": None}


def is_sample(path: str) -> bool:
    """Whether `path` is the bundled sample, relative or absolute (its last three parts)."""
    return Path(path).parts[-3:] == Path(SAMPLE_PATH).parts


class DataConfig(BaseModel):
    """Where the labelled text is and which columns hold the text and the label. The defaults are
    the bundled sample's; with another path, unset columns default to `text` and `label`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        SAMPLE_PATH,
        min_length=1,
        description="A local file or folder, or a Hugging Face Hub dataset id (org/name). Default: the "
        "bundled sample (support tickets), relative to the project folder.",
    )
    test_path: str | None = Field(
        None,
        description="Optional separate test set with the same columns; "
        "the main data is then split into train and validation only.",
    )
    format: DataFormat = Field("auto", description="File format; `auto` decides from the file suffix.")
    text_columns: list[Annotated[str, Field(min_length=1)]] = Field(
        default=SAMPLE_COLUMNS["text_columns"],
        min_length=1,
        max_length=10,
        description="Column(s) holding the text; several are joined with `text_separator`. "
        "Unset: the sample's subject and body, or `text` with another path.",
    )
    text_separator: str = Field("\n", max_length=10, description="Joins several text columns.")
    label_column: str = Field(
        SAMPLE_COLUMNS["label_column"],
        min_length=1,
        description="Column holding the class label. Unset: the sample's category, or `label` with another path.",
    )
    id_column: str | None = Field(
        SAMPLE_COLUMNS["id_column"],
        description="Column with a unique row id. Unset: the sample's ticket_id, or row numbers with another path.",
    )
    labels: list[str] | None = Field(
        SAMPLE_COLUMNS["labels"],
        min_length=2,
        description="The allowed labels; rows with any other label are quarantined. Unset: the sample's four "
        "categories, or any label with another path.",
    )
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="CSV/TSV field delimiter; unset: `,` for .csv, tab for .tsv."
    )
    encoding: str = Field("utf-8", description="Text encoding of CSV, TSV and JSON Lines files.")
    quoting: Literal["auto", "standard", "none"] = Field(
        "auto",
        description="Quotes in CSV/TSV fields: standard (a quoted field may hold delimiters, newlines and "
        "doubled quotes, as pandas and spreadsheets write them) or none (quotes are text, as in the SMS "
        "Spam Collection); auto: standard for CSV, and for TSV whatever the file's quotes show.",
    )
    null_labels: list[str] = Field(
        default=["nan", "none", "null", "n/a", "na", "<na>"],
        description="Label spellings that mean 'no label' (compared ignoring case and spaces): such rows are "
        "quarantined as missing a label instead of becoming a class.",
    )
    hub_split: str = Field("train", description="Split to load from a Hub dataset or a DatasetDict folder.")
    hub_config: str | None = Field(None, description="Configuration (subset) name of a Hub dataset.")
    hub_revision: str | None = Field(None, description="Git revision of a Hub dataset, for reproducibility.")

    @model_validator(mode="before")
    @classmethod
    def _other_data_other_columns(cls, values: Any) -> Any:
        if isinstance(values, dict) and not is_sample(str(values.get("path", SAMPLE_PATH))):
            return {**GENERIC_COLUMNS, **values}
        return values
