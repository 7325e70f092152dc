"""Load a labelled text dataset from a file, a saved dataset folder or the Hugging Face Hub,
and normalize it to one table of `id`, `text`, `label`."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy
from pydantic import BaseModel

from tasks.config.data import DataConfig
from tasks.core.errors import ConfigError, DataLoadError, first_line
from tasks.core.workspace import STEP_CACHE
from tasks.data.unicode import clean, clean_series

SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


FORMAT_HELP = "CSV, TSV, JSON Lines, Parquet, a datasets.save_to_disk folder, or a Hub dataset id"


class DatasetRef(BaseModel):
    """A table on disk, named by its content: what tasks pass between each other instead of frames."""

    path: str
    sha256: str
    rows: int


COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}


def compression_of(path: Path) -> str | None:
    """How a file is compressed, from its first bytes (a gzip file named .csv is still gzip)."""
    with path.open("rb") as handle:
        start = handle.read(8)
    return next((kind for magic, kind in MAGIC.items() if start.startswith(magic)), None)


def detect_format(source: str, config: DataConfig) -> str:
    """The concrete format of `source`: the configured one, else from its suffix (under a
    compression suffix such as .gz) or shape."""
    if config.format != "auto":
        return config.format
    path = Path(source)
    if path.is_dir():
        return "disk"
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes.pop()
    if suffixes and suffixes[-1] in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffixes[-1]]
    if path.exists():
        raise DataLoadError(
            f"Cannot tell the format of {source} from its suffix. Use one of "
            f"{', '.join(sorted(SUFFIX_FORMATS))} or set data.format."
        )
    if source.count("/") == 1 and not source.startswith((".", "/", "~")) and not path.suffix:
        return "hub"
    raise DataLoadError(missing_data(source, config))


def check_sources(config: DataConfig, labelled: bool = True) -> None:
    """The data (and test) files exist, are readable and have the configured columns: raises
    DataLoadError. Called before any server starts, so a wrong path or column is answered in seconds.
    A Hub dataset is checked when it loads."""
    for source in filter(None, (config.path, config.test_path)):
        if detect_format(source, config) == "hub":
            continue
        frame = read_source(source, config)
        if not frame.empty:  # an empty table is reported, with its own fix, when the run loads it
            check_columns(frame, config, source, labelled)


def source_stamps(config: DataConfig) -> list[str]:
    """What identifies the data a run reads, cheaply: each local file's (or a folder's files') path,
    size and modification time; a Hub dataset's id (its revision is a setting)."""
    stamps = []
    for source in filter(None, (config.path, config.test_path)):
        path = Path(source)
        if detect_format(source, config) == "hub" or not path.exists():
            stamps.append(source)
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamps += [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return stamps


def missing_data(source: str, config: DataConfig) -> str:
    """Where to point when the data is not there (the form's field and the command's option)."""
    field = "data.test_path (--test-data" if source == config.test_path else "data.path (--data"
    return (
        f"Data file not found: {source}. Set {field} on the command line) to a {FORMAT_HELP}; "
        "relative paths start from the working folder (a deployment's: the project folder)."
    )


def encoding_advice(path: Path) -> str:
    """What to do about a file that is not valid text in the configured encoding, from its first bytes:
    UTF-16 (Excel's "Unicode text" and "CSV UTF-16"), binary, or some 8-bit encoding."""
    with path.open("rb") as handle:
        start = handle.read(4096)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(start) > 16 and start[1::2].count(0) > len(start) // 4):
        return "It is UTF-16 text (Excel's Unicode text or CSV UTF-16): set data.encoding=utf-16."
    if start.count(0) or (compression_of(path) is None and sum(byte < 9 for byte in start) > len(start) // 20):
        return "It does not look like text at all (a binary file): check data.path points at your data."
    return "Re-save it as UTF-8, or set data.encoding to the encoding it was written in (e.g. latin-1 or cp1252)."


def check_regular(path: Path, setting: str) -> None:
    """A file or folder to read, not a FIFO, socket or device: reading those blocks or never ends."""
    if not (path.is_file() or path.is_dir()):
        raise DataLoadError(
            f"{path} is not a regular file or folder (a pipe, socket or device), which tuneloop cannot read "
            f"safely. Point {setting} at a file (save the stream to one first)."
        )


def read_source(source: str, config: DataConfig) -> pd.DataFrame:
    """Read the raw table, turning every reading failure into one actionable DataLoadError."""
    kind = detect_format(source, config)
    if kind == "hub":
        return read_hub(source, config)
    path = Path(source)
    if not path.exists():
        raise DataLoadError(missing_data(source, config))
    check_regular(path, "data.path" if source != config.test_path else "data.test_path")
    if path.is_file() and path.stat().st_size == 0:
        raise DataLoadError(f"Data file is empty: {source}. It needs a header row and labelled rows.")
    try:
        compression = compression_of(path) if path.is_file() else None
        if kind in ("csv", "tsv"):
            delimiter = config.delimiter or ("\t" if kind == "tsv" else ",")
            check_header(path, delimiter, config.encoding, compression, source)
            return pd.read_csv(
                path,
                sep=delimiter,
                encoding=config.encoding,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                quoting=csv_quoting(path, kind, delimiter, config, compression),
                compression=compression,
            )
        if kind == "jsonl":
            lines = not starts_with(path, "[", config.encoding, compression)  # a JSON array of records is read too
            return pd.read_json(path, lines=lines, encoding=config.encoding, dtype=False, compression=compression)
        if kind == "parquet":
            return pd.read_parquet(path)
        return read_saved_dataset(path, config)
    except UnicodeDecodeError as error:
        raise DataLoadError(
            f"{source} is not valid {config.encoding} text (byte 0x{error.object[error.start]:02x} at "
            f"offset {error.start}). {encoding_advice(path)}"
        ) from None
    except EOFError as error:  # a truncated compressed file
        raise DataLoadError(f"{source} is cut short ({first_line(error)}): copy or download it again.") from None
    except (ValueError, pd.errors.ParserError, OSError) as error:
        raise DataLoadError(
            f"Cannot read {source} as {kind}: {first_line(error).rstrip('.')}. Check the file, or set data.format / "
            "data.delimiter."
        ) from None


def sample_text(path: Path, encoding: str, compression: str | None, size: int = 262_144) -> str:
    """The start of a text file (decompressed), for sniffing its header and quoting."""
    import bz2
    import gzip
    import lzma

    openers = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
    if compression not in (None, *openers):
        return ""  # zip, zstd: pandas reads them; nothing to sniff
    opener: Any = openers.get(compression or "", open)
    with opener(path, "rt", encoding=encoding, errors="replace", newline="") as handle:
        return str(handle.read(size))


def starts_with(path: Path, symbol: str, encoding: str, compression: str | None) -> bool:
    return sample_text(path, encoding, compression, 4096).lstrip("\ufeff \t\r\n").startswith(symbol)


def check_header(path: Path, delimiter: str, encoding: str, compression: str | None, source: str) -> None:
    """Two columns with the same name are an error (pandas would rename the second `name.1`)."""
    import csv
    from collections import Counter

    first = sample_text(path, encoding, compression, 65_536).lstrip("\ufeff").splitlines()[:1]
    header = next(csv.reader(first, delimiter=delimiter), []) if first else []
    repeated = [name for name, count in Counter(name.strip() for name in header).items() if count > 1 and name]
    if repeated:
        raise DataLoadError(
            f"{source} has {len(repeated)} column name(s) twice in its header: {', '.join(map(repr, repeated))}. "
            "Rename the duplicate so that every column has its own name (tuneloop would not know which to read)."
        )


def standard_quotes(text: str, delimiter: str) -> bool:
    """Whether the quotes in `text` are standard CSV quoting: every field that starts with a quote
    ends with one (inner quotes doubled) right before a delimiter or the line's end, and at least
    one field is quoted. The SMS Spam Collection's `"Happy valentines day" I know...` is not."""
    quoted, index, start = False, 0, True
    while index < len(text):
        if start and text[index] == '"':
            end = index + 1
            while (end := text.find('"', end)) != -1 and text[end + 1 : end + 2] == '"':
                end += 2
            if end == -1:
                return quoted  # the sample ends inside a quoted field
            if text[end + 1 : end + 2] not in (delimiter, "\n", "\r", ""):
                return False
            quoted, index, start = True, end + 1, False
            continue
        start = text[index] in (delimiter, "\n")
        index += 1
    return quoted


def csv_quoting(path: Path, kind: str, delimiter: str, config: DataConfig, compression: str | None) -> int:
    """csv.QUOTE_MINIMAL (standard) or csv.QUOTE_NONE, per data.quoting (see DataConfig)."""
    import csv

    if config.quoting != "auto":
        return csv.QUOTE_MINIMAL if config.quoting == "standard" else csv.QUOTE_NONE
    if kind == "csv":
        return csv.QUOTE_MINIMAL
    sample = sample_text(path, config.encoding, compression)
    return csv.QUOTE_MINIMAL if standard_quotes(sample, delimiter) else csv.QUOTE_NONE


def read_saved_dataset(path: Path, config: DataConfig) -> pd.DataFrame:
    """A folder written by `datasets.save_to_disk` (a Dataset, or a DatasetDict and its split)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataLoadError(
            f"{path} is a folder but not one written by datasets.save_to_disk. "
            "Point data.path (--data) at a file, or save the dataset with save_to_disk."
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if config.hub_split not in loaded:
            raise DataLoadError(
                f"Split '{config.hub_split}' not in {path}; it has {', '.join(loaded)}. Set data.hub_split."
            )
        loaded = loaded[config.hub_split]
    return dataset_to_frame(loaded, config)


def read_hub(dataset_id: str, config: DataConfig) -> pd.DataFrame:
    """A dataset from the Hugging Face Hub (or its local cache) through `datasets.load_dataset`."""
    import datasets

    try:
        loaded = datasets.load_dataset(
            dataset_id, config.hub_config, split=config.hub_split, revision=config.hub_revision
        )
    except Exception as error:  # datasets raises many types: connection, missing, gated
        reason = first_line(error)
        raise DataLoadError(
            f"Cannot load Hub dataset '{dataset_id}' (split {config.hub_split}): {reason}. Without "
            "network access, download it elsewhere and point data.path (--data) at its save_to_disk folder or "
            "a file, or set HF_DATASETS_OFFLINE=1 to use the local cache."
        ) from None
    return dataset_to_frame(loaded, config)


def dataset_to_frame(dataset: Any, config: DataConfig) -> pd.DataFrame:
    """A `datasets.Dataset` as a frame, with class-label integers mapped to their names."""
    frame = dataset.to_pandas()
    feature = dataset.features.get(config.label_column_name)
    if feature is not None and hasattr(feature, "int2str") and config.label_column_name in frame:
        frame[config.label_column_name] = frame[config.label_column_name].map(
            lambda value: feature.int2str(int(value)) if pd.notna(value) and value >= 0 else None
        )
    return frame


def delimiter_hint(frame: pd.DataFrame) -> str:
    """When a delimited file parsed into one column, say which delimiter it seems to use."""
    if frame.shape[1] != 1:
        return ""
    header = str(frame.columns[0])
    for symbol, name in (("\t", "tab"), (";", "';'"), ("|", "'|'"), (",", "','")):
        if symbol in header:
            shown = "\\t" if symbol == "\t" else symbol
            return (
                f" The file parsed into a single column, so its delimiter looks like {name}: "
                f"set data.delimiter='{shown}' (--set data.delimiter='{shown}')."
            )
    return ""


# What to change when a configured column is not in the file, per setting (form field and CLI option).
COLUMN_FIXES = {
    "data.text_columns": "set data.text_columns to the column(s) with the text (--text-column)",
    "data.label_column": "set data.label_column to the column with the label (--label-column)",
    "data.id_column": "set data.id_column to the column with a row id, or leave it unset to use row numbers "
    "(--set data.id_column=null)",
}


def check_columns(frame: pd.DataFrame, config: DataConfig, source: str, labelled: bool = True) -> None:
    """Every configured column exists (the label's only for labelled data), and text columns hold text."""
    wanted = [("data.text_columns", name) for name in config.text_column_names]
    if labelled:
        wanted.append(("data.label_column", config.label_column_name))
    if config.id_column_name:
        wanted.append(("data.id_column", config.id_column_name))
    missing = [(key, name) for key, name in wanted if name not in frame.columns]
    if missing:
        names = ", ".join(f"'{name}' ({key})" for key, name in missing)
        available = ", ".join(repr(str(column)) for column in frame.columns[:20])
        fixes = "; ".join(dict.fromkeys(COLUMN_FIXES[key] for key, _ in missing))
        raise DataLoadError(
            f"Column{'s' if len(missing) > 1 else ''} {names} not found in {source}. Available columns: {available}. "
            f"Fix: {fixes} (in the Prefect form: the Data section).{delimiter_hint(frame)}"
        )
    if labelled and config.label_column_name in config.text_column_names:
        raise DataLoadError(
            f"'{config.label_column_name}' is both the label column and a text column: the model would read the "
            "answer. "
            "Set data.text_columns (--text-column) to the column with the text and data.label_column "
            "(--label-column) to the one with the label."
        )
    for key, name in wanted:
        kinds = non_scalar(frame[name])
        if kinds:
            raise DataLoadError(
                f"Column '{name}' ({key}) in {source} holds {kinds} values "
                f"(e.g. {str(first_non_scalar(frame[name]))[:80]}), not one text or label per row. Join or "
                f"pick one value per row before loading, or point {key} at another column."
            )
    for name in config.text_column_names:
        if pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name]):
            raise DataLoadError(
                f"Text column '{name}' in {source} holds {frame[name].dtype} values, "
                "not text. Set data.text_columns (--text-column) to the column with the text."
            )


NON_SCALAR = (list, tuple, dict, set, np.ndarray)


def non_scalar(column: pd.Series) -> str:
    """The container types (list, dict, array) in a column, as words; empty when every value is scalar."""
    if column.dtype != object:
        return ""
    kinds = {type(value).__name__ for value in column if isinstance(value, NON_SCALAR)}
    return " and ".join(sorted("array" if kind == "ndarray" else kind for kind in kinds))


def first_non_scalar(column: pd.Series) -> Any:
    return next(value for value in column if isinstance(value, NON_SCALAR))


def null_labels(label: pd.Series, spellings: list[str]) -> pd.Series:
    """The labels, with the spellings that mean 'no label' (ignoring case and spaces) as nulls."""
    nulls = {spelling.strip().casefold() for spelling in spellings}
    spelled = label.str.strip().str.casefold()
    return label.mask((spelled.isin(nulls) | (spelled == "")).fillna(False).astype(bool))


def label_key(label: str) -> str:
    """What two spellings of the same class share: no case, no surrounding space, numbers as numbers
    (to 9 decimal places)."""
    text = label.strip().casefold()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):  # nan, inf: words, not amounts
        return text
    # Rounded to 9 places: 0.3 and 0.30000000000000004 (a float printed in full) are one class.
    rounded = round(number, 9)
    return repr(int(rounded)) if rounded.is_integer() else repr(rounded)


def check_label_spellings(label: pd.Series, source: str) -> None:
    """Labels that differ only in case, spaces or number format ("1", "1.0", "01") are one class
    written several ways: an error naming them, not silently several classes."""
    values = sorted(set(label.dropna()))
    groups: dict[str, list[str]] = {}
    for value in values:
        groups.setdefault(label_key(value), []).append(value)
    clashes = [spellings for spellings in groups.values() if len(spellings) > 1]
    if clashes:
        shown = "; ".join(" = ".join(repr(value) for value in spellings) for spellings in clashes[:5])
        raise DataLoadError(
            f"{source} writes {len(clashes)} label(s) in several ways that would become separate classes: {shown}. "
            "Write each label one way in the data (the same case, spaces and number format)."
        )


def join_text(frame: pd.DataFrame, columns: list[str], separator: str) -> pd.Series:
    """One text per row: the text columns joined, skipping empty parts; null when all are null."""
    parts = [frame[name].astype("string") for name in columns]
    if len(parts) == 1:
        return parts[0]
    present = pd.concat([part.notna() for part in parts], axis=1).any(axis=1)
    joined = parts[0].fillna("")
    for part in parts[1:]:
        part = part.fillna("")
        both = (joined.str.len() > 0) & (part.str.len() > 0)
        joined = joined.where(~both, joined + separator) + part
    return joined.where(present, pd.NA)


def row_ids(frame: pd.DataFrame, config: DataConfig) -> pd.Series:
    """Each row's id as text: the id column, else the row number."""
    if config.id_column_name:
        return frame[config.id_column_name].astype("string")
    return pd.Series(range(len(frame)), dtype="int64").astype("string")


def normalize(frame: pd.DataFrame, config: DataConfig, source: str) -> pd.DataFrame:
    """The normalized table: `id` (string), `text` (string, may be null) and `label` (string)."""
    if frame.empty:
        raise DataLoadError(f"{source} has no data rows (a header only, or an empty table). Add labelled rows.")
    check_columns(frame, config, source)
    label, relabelled = clean_series(
        frame[config.label_column_name].where(frame[config.label_column_name].notna(), None).astype("string")
    )
    label = null_labels(label.str.strip(), config.null_labels)
    check_label_spellings(label, source)
    text, retexted = clean_series(join_text(frame, config.text_column_names, config.text_separator))
    report_cleaning(source, retexted, relabelled)
    table = pd.DataFrame({"id": row_ids(frame, config), "text": text, "label": label})
    return table.reset_index(drop=True)


def report_cleaning(source: str, texts: int, labels: int) -> None:
    """One log line when the Unicode normaliser changed texts or labels (tasks/data/unicode.py)."""
    if texts or labels:
        logging.getLogger(__name__).warning(
            "%s: %d texts and %d labels held invisible or control characters (zero-width spaces, byte-order "
            "marks, NUL bytes) or another Unicode form of the same letters: removed, and written in NFC.",
            source,
            texts,
            labels,
        )


def text_table(source: str, config: DataConfig) -> pd.DataFrame:
    """Texts to label: `id` (the id column, else the row number) and `text`; rows without text dropped."""
    frame = read_source(source, config)
    if frame.empty:
        raise DataLoadError(f"{source} has no data rows (a header only, or an empty table). Add texts to label.")
    check_columns(frame, config, source, labelled=False)
    text, changed = clean_series(join_text(frame, config.text_column_names, config.text_separator))
    report_cleaning(source, changed, 0)
    table = pd.DataFrame({"id": row_ids(frame, config), "text": text})
    table = table[table["text"].notna() & (table["text"].str.strip().str.len() > 0)].reset_index(drop=True)
    if table.empty:
        raise DataLoadError(f"{source} has no texts in {', '.join(config.text_column_names)} (data.text_columns).")
    return table


def normalized_text(text: pd.Series) -> Any:
    """Texts as duplicates and leaks are judged: case-folded, whitespace collapsed (an Arrow array)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(text.astype("string"))
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    # Replacing is slow and rarely needed: collapse only the texts that have runs or odd whitespace.
    uneven = pc.fill_null(pc.match_substring_regex(values, r"\s\s|[\t\n\r\f\v]"), False)
    collapsed = pc.replace_substring_regex(pc.filter(values, uneven), r"[\s\v]+", " ")
    values = pc.replace_with_mask(values, uneven, collapsed)
    return pc.utf8_lower(pc.utf8_trim_whitespace(values))


def text_key(text: pd.Series) -> pd.Series:
    """The normalized text of each row (see `normalized_text`)."""
    return pd.Series(normalized_text(text).to_pylist(), index=text.index, dtype="string")


def text_groups(text: pd.Series) -> np.ndarray:
    """An integer per row naming its normalized text: equal texts share it; -1 for a missing text."""
    encoded = normalized_text(text).dictionary_encode()
    return encoded.indices.fill_null(-1).to_numpy().astype("int64")


def table_sha256(table: pd.DataFrame) -> str:
    """SHA-256 of a table's content (values and column names, not its file encoding)."""
    digest = hashlib.sha256(",".join(table.columns).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_table(table: pd.DataFrame, path: Path) -> DatasetRef:
    """Write a table as Parquet and return its reference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return DatasetRef(path=str(path), sha256=table_sha256(table), rows=len(table))


def read_table(ref: DatasetRef) -> pd.DataFrame:
    """Read a table written by `write_table`."""
    return pd.read_parquet(ref.path)


def load_table(source: str, config: DataConfig) -> pd.DataFrame:
    """Read and normalize one source."""
    return normalize(read_source(source, config), config, source)


def read_texts(texts: list[str] | None, input_file: Path | None) -> list[str]:
    """The texts to label, from --text or --input (exactly one of them)."""
    if bool(texts) == bool(input_file):
        raise ConfigError("Give texts with --text TEXT (repeatable) or --input FILE, not both and not neither.")
    if texts:
        blank = [number for number, text in enumerate(texts, start=1) if not text.strip()]
        if blank:
            raise ConfigError(f"--text number {blank[0]} is empty: give each --text some words to label.")
        return list(texts)
    assert input_file is not None
    if input_file.suffix.lower() in (".txt", ""):
        if not input_file.exists():
            raise ConfigError(f"Input file not found: {input_file}.")
        check_regular(input_file, "--input")
        if input_file.is_dir():
            raise ConfigError(
                f"--input {input_file} is a folder: give a text file (one text per line) or a table with a "
                "`text` column."
            )
        try:
            content = input_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{input_file} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}). "
                "Save it as UTF-8, or pass a CSV with a `text` column."
            ) from None
        lines = [line for line in map(clean, content.splitlines()) if line.strip()]
    else:
        frame = read_source(str(input_file), DataConfig(path=str(input_file)))
        if "text" not in frame.columns:
            raise ConfigError(f"{input_file} has no `text` column (columns: {', '.join(map(str, frame.columns))}).")
        lines = frame["text"].dropna().astype(str).tolist()
    if not lines:
        raise ConfigError(f"{input_file} holds no texts.")
    return lines


def source_fingerprint(context: object, parameters: dict) -> str:
    """Cache key part that changes whenever the source file's bytes change."""
    path = Path(parameters["source"])
    if not path.is_file():
        return str(parameters["source"])
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@task(
    name="load_dataset",
    persist_result=True,
    cache_policy=STEP_CACHE + CacheKeyFnPolicy(cache_key_fn=source_fingerprint),
)
def load_dataset(source: str, config: DataConfig, output: Path) -> DatasetRef:
    """Load `source`, normalize it and write it as Parquet to `output`."""
    table = load_table(source, config)
    return write_table(table, output)


@task(name="load_texts")
def load_texts(config: DataConfig, output: Path) -> DatasetRef:
    """The texts to label (id and text) from `config.path`, written as Parquet to `output`."""
    return write_table(text_table(config.path, config), output)
