"""Where the labelled text is and which columns hold text, label and id. The data-dependent fields
are unset by default and resolved where they are used (`text_column_names`, `label_column_name`, ...):
the bundled sample's columns and labels when the path is the sample, generic columns (`text`, `label`,
row numbers, any label) for any other path. So a form (or a YAML file) that changes only the path and
the columns never inherits the sample's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    """Where the labelled text is and which columns hold the text and the label.
    Leave the columns unset for the bundled sample; for your own file set the path and its columns."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        SAMPLE_PATH,
        min_length=1,
        description="A local file or folder, or a Hugging Face Hub dataset id (org/name). Default: the "
        "bundled sample (support tickets), relative to the project folder.",
    )
    text_columns: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        max_length=10,
        description="Column(s) holding the text; several are joined with `text_separator`. "
        "Unset: the sample's subject and body, or `text` for your own file.",
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        description="Column holding the class label. Unset: the sample's category, or `label` for your own file.",
    )
    id_column: str | None = Field(
        None,
        description="Column with a unique row id. Unset: the sample's ticket_id, or row numbers for your own file.",
    )
    labels: list[str] | None = Field(
        None,
        min_length=2,
        description="The allowed labels; rows with any other label are quarantined. Unset: the sample's four "
        "categories, or any label for your own file.",
    )
    test_path: str | None = Field(
        None,
        description="Optional separate test set with the same columns; "
        "the main data is then split into train and validation only.",
    )
    format: DataFormat = Field("auto", description="File format; `auto` decides from the file suffix.")
    text_separator: str = Field("\n", max_length=10, description="Joins several text columns.")
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

    @field_validator("text_columns")
    @classmethod
    def _each_text_column_once(cls, columns: list[str] | None) -> list[str] | None:
        repeated = sorted(name for name, count in Counter(columns or []).items() if count > 1)
        if repeated:
            raise ValueError(
                f"names {', '.join(repr(name) for name in repeated)} more than once (each text would repeat): "
                "list each text column once"
            )
        return columns

    def resolved(self, name: str) -> Any:
        """A data-dependent field as the run uses it: its value, or when unset the sample's (the path is
        the sample) or the generic one (any other path)."""
        value = getattr(self, name)
        if value is not None:
            return value
        default = (SAMPLE_COLUMNS if is_sample(self.path) else GENERIC_COLUMNS)[name]
        return list(default) if isinstance(default, list) else default

    @property
    def text_column_names(self) -> list[str]:
        """The columns holding the text."""
        return list(self.resolved("text_columns"))

    @property
    def label_column_name(self) -> str:
        """The column holding the label."""
        return str(self.resolved("label_column"))

    @property
    def id_column_name(self) -> str | None:
        """The id column, or None for row numbers."""
        value = self.resolved("id_column")
        return None if value is None else str(value)

    @property
    def allowed_labels(self) -> list[str] | None:
        """The allowed labels, or None for any."""
        value = self.resolved("labels")
        return None if value is None else list(value)
