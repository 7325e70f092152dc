from pathlib import Path

import pandas as pd
import pytest

from tasks.config.data import SAMPLE_PATH, DataConfig
from tasks.core.errors import DataLoadError
from tasks.data.load import load_table, table_sha256, text_groups, text_key
from tests.helpers.tables import clean_table, write_csv


def test_every_file_format_loads_to_the_same_table(tmp_path: Path) -> None:
    frame = clean_table(3)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    config = DataConfig(path=str(tmp_path / "d.csv"), id_column="id")
    hashes = {
        suffix: table_sha256(load_table(str(tmp_path / f"d.{suffix}"), config))
        for suffix in ("csv", "tsv", "jsonl", "parquet")
    }
    assert len(set(hashes.values())) == 1, hashes
    table = load_table(str(tmp_path / "d.csv"), config)
    assert list(table.columns) == ["id", "text", "label"]
    assert table["id"].tolist() == frame["id"].tolist()


def test_the_defaults_describe_the_sample_and_other_data_starts_generic() -> None:
    """The data-dependent fields are unset (so a form never inherits the sample's) and resolve by path."""
    sample = DataConfig()
    assert (sample.text_columns, sample.label_column, sample.id_column, sample.labels) == (None, None, None, None)
    resolved = (sample.path, sample.text_column_names, sample.label_column_name)
    assert resolved == (SAMPLE_PATH, ["subject", "body"], "category")
    assert sample.id_column_name == "ticket_id" and sample.allowed_labels == [
        "account",
        "billing",
        "shipping",
        "technical",
    ]
    assert DataConfig(path="./data/sample/support_tickets.csv").allowed_labels == sample.allowed_labels, "same path"
    assert DataConfig(path="/srv/tuneloop/data/sample/support_tickets.csv").label_column_name == "category", "absolute"
    assert DataConfig(path="/srv/other/support_tickets.csv").label_column_name == "label"
    other = DataConfig(path="tickets.csv")
    generic = (other.text_column_names, other.label_column_name, other.id_column_name, other.allowed_labels)
    assert generic == (["text"], "label", None, None)
    chosen = DataConfig(path="tickets.csv", text_columns=["body"], labels=["a", "b"])
    assert chosen.text_column_names == ["body"] and chosen.allowed_labels == ["a", "b"]
    assert chosen.label_column_name == "label"


def test_saved_dataset_folder_maps_class_label_ids_to_names(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    dataset = datasets.Dataset.from_dict({"sentence": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features)
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved"))
    table = load_table(str(tmp_path / "saved"), DataConfig(path=str(tmp_path / "saved"), text_columns=["sentence"]))
    assert table["label"].tolist() == ["neg", "pos", "pos"]
    assert table["id"].tolist() == ["0", "1", "2"]


def test_hub_dataset_offline_fails_with_a_clear_message() -> None:
    with pytest.raises(DataLoadError, match=r"Cannot load Hub dataset 'someone/tickets'.*save_to_disk folder"):
        load_table("someone/tickets", DataConfig(path="someone/tickets"))


def test_text_columns_are_joined_and_all_null_stays_null(tmp_path: Path) -> None:
    frame = pd.DataFrame({"title": ["Late", None, None], "body": ["where is it", "crash", None], "y": ["a", "b", "a"]})
    path = write_csv(frame, tmp_path / "t.csv")
    table = load_table(
        path, DataConfig(path=path, text_columns=["title", "body"], label_column="y", text_separator=" | ")
    )
    assert table["text"].tolist()[:2] == ["Late | where is it", "crash"]
    assert pd.isna(table["text"].iloc[2])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "Data file not found"),
        (b"", "Data file is empty"),
        (b"text,label\n", "has no data rows"),
        (b"text;label\nhello;a\n", "delimiter looks like ';': set data.delimiter=';'"),
        (b"body,label\nhello,a\n", "Column 'text' (data.text_columns) not found"),
        (b"text,label\nh\xe9llo,a\n", "is not valid utf-8 text (byte 0xe9"),
    ],
)
def test_unreadable_files_fail_with_the_fix(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataLoadError) as caught:
        load_table(str(path), DataConfig(path=str(path)))
    assert expected in str(caught.value)


def test_numeric_text_column_in_parquet_is_refused(tmp_path: Path) -> None:
    pd.DataFrame({"text": [1, 2, 3], "label": ["a", "b", "a"]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataLoadError, match=r"Text column 'text' .* holds int64 values, not text"):
        load_table(str(tmp_path / "n.parquet"), DataConfig(path=str(tmp_path / "n.parquet")))


def test_unknown_suffix_names_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataLoadError, match=r"Cannot tell the format .*\.csv"):
        load_table(str(tmp_path / "data.xlsx"), DataConfig(path=str(tmp_path / "data.xlsx")))


def test_content_hash_follows_content_only() -> None:
    table = clean_table(2)
    assert table_sha256(table) == table_sha256(table.copy())
    changed = table.copy()
    changed.loc[0, "text"] += "!"
    assert table_sha256(changed) != table_sha256(table)


def test_text_key_folds_case_and_whitespace() -> None:
    texts = pd.Series(["Hello  World", " hello world\n", "hello\tworld", "Hello, world", None])
    assert text_key(texts).tolist()[:4] == ["hello world", "hello world", "hello world", "hello, world"]
    groups = text_groups(texts)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    assert groups[4] == -1


def test_invisible_characters_and_unicode_forms_do_not_make_new_classes_or_new_texts(tmp_path: Path) -> None:
    """One normaliser before the gate, the duplicate check and the label comparison: a label with a
    trailing zero-width space, or in NFD, is the same class; texts that differ only by zero-width
    characters are the same text; a text of zero-width characters only is blank; NUL bytes go."""
    rows = [
        ("please refund my order", "billing"),
        ("please\u200b refund my order", "billing\u200b"),  # zero-width space in the text and the label
        ("résilié mon contrat", "re\u0301silie\u0301"),  # the label in NFD
        ("cancel\x00 my contract", "résilié"),  # NUL byte
        ("\u200b\u200d\ufeff", "billing"),  # invisible only
    ]
    path = tmp_path / "unicode.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    table = load_table(str(path), DataConfig(path=str(path)))
    assert sorted(set(table["label"])) == ["billing", "résilié"]
    assert table["text"][0] == table["text"][1], "the zero-width space is gone"
    assert text_key(table["text"])[0] == text_key(table["text"])[1]
    assert table["text"][3] == "cancel my contract" and table["text"][4] == ""


def test_labels_that_differ_by_float_noise_are_one_label_written_two_ways(tmp_path: Path) -> None:
    table = clean_table(4)
    path = write_csv(
        table.assign(label=(["0.3", "0.30000000000000004"] * len(table))[: len(table)]), tmp_path / "f.csv"
    )
    with pytest.raises(DataLoadError, match=r"'0\.3' = '0\.30000000000000004'"):
        load_table(path, DataConfig(path=path))
