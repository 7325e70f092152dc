"""Split the clean table into train, validation and test: stratified by label, seeded, and
leak-free (rows whose normalized texts are equal always land in the same split)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config.split import SplitConfig
from tasks.core.errors import SplitError
from tasks.core.workspace import STEP_CACHE
from tasks.data.load import DatasetRef, read_table, text_groups, text_key, write_table

SPLITS = ("train", "validation", "test")


class SplitReport(BaseModel):
    """References to the written splits, their class counts, and the leak check's result."""

    train: DatasetRef
    validation: DatasetRef
    test: DatasetRef
    class_counts: dict[str, dict[str, int]]
    overlap: dict[str, int]
    removed_for_leakage: int
    seed: int
    summary_path: str


def split_shares(config: SplitConfig, given_test: bool) -> dict[str, float]:
    """The shares to draw; with a given test set, train and validation share all the rows."""
    if given_test:
        total = config.train_fraction + config.validation_fraction
        return {"train": config.train_fraction / total, "validation": config.validation_fraction / total}
    return {"train": config.train_fraction, "validation": config.validation_fraction, "test": config.test_fraction}


def check_class_sizes(groups: pd.DataFrame, shares: dict[str, float]) -> None:
    """Every class needs enough distinct texts for each split to expect at least one."""
    needed = max(len(shares), math.ceil(1 / min(shares.values()) - 1e-9))
    counts = groups["label"].value_counts()
    small = counts[counts < needed]
    if len(small):
        listed = ", ".join(f"'{label}' has {count}" for label, count in small.items())
        shown = " / ".join(f"{name} {share:.2f}" for name, share in shares.items())
        raise SplitError(
            f"Classes too small to stratify: {listed} distinct text(s); each class needs at least {needed} "
            f"for split shares {shown}. Add examples, merge or drop these classes, or raise "
            "split.validation_fraction / split.test_fraction."
        )


def assign_splits(table: pd.DataFrame, shares: dict[str, float], seed: int) -> pd.Series:
    """The split name of each row: groups of equal texts are split, stratified by their label."""
    from sklearn.model_selection import train_test_split

    rows = pd.DataFrame({"group": text_groups(table["text"]), "label": table["label"].to_numpy()})
    groups = rows.drop_duplicates("group").reset_index(drop=True)
    check_class_sizes(groups, shares)
    names, remaining, left = list(shares), groups, 1.0
    assigned: dict[int, str] = {}
    for name in names[:0:-1]:  # carve test, then validation, out of what remains; train keeps the rest
        rest, taken = train_test_split(
            remaining, test_size=shares[name] / left, stratify=remaining["label"], random_state=seed
        )
        assigned.update(dict.fromkeys(taken["group"].tolist(), name))
        remaining, left = rest, left - shares[name]
    assigned.update(dict.fromkeys(remaining["group"].tolist(), names[0]))
    return rows["group"].map(assigned).set_axis(table.index)


def overlap_counts(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Distinct normalized texts shared by each pair of splits (all must be 0)."""
    keys = {name: set(text_key(frame["text"]).dropna()) for name, frame in splits.items()}
    names = list(splits)
    return {f"{a}/{b}": len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1 :]}


def assert_no_overlap(overlap: dict[str, int]) -> None:
    """The leak check run after every split."""
    leaks = {pair: count for pair, count in overlap.items() if count}
    if leaks:
        raise SplitError(
            f"Split leak: texts appear in more than one split ({leaks}). This is a bug; "
            "please report it with the data's hash."
        )


def drop_test_texts(table: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows of `table` whose text is also in the given test set leak into it: drop them."""
    leaking = text_key(table["text"]).isin(set(text_key(test["text"]).dropna()))
    return table[~leaking.to_numpy()], int(leaking.sum())


def check_rows_left(table: pd.DataFrame, removed: int) -> None:
    """After dropping the training rows the test set also holds, enough are left to train on."""
    classes = table["label"].nunique()
    if len(table) < 2 * max(classes, 2) or classes < 2:
        raise SplitError(
            f"The separate test set holds {removed} of the training texts, and only {len(table)} training rows "
            f"({classes} classes) are left: is data.test_path (--test-data) the training file, or a copy of it? "
            "Give a test set of other texts, or leave data.test_path unset to split one off."
        )


def split_table(
    table: pd.DataFrame, config: SplitConfig, test: pd.DataFrame | None = None
) -> tuple[dict[str, pd.DataFrame], int]:
    """The three splits as frames, and how many rows were dropped because the given test set has them."""
    removed = 0
    if test is not None:
        table, removed = drop_test_texts(table, test)
        check_rows_left(table, removed)
    shares = split_shares(config, given_test=test is not None)
    names = assign_splits(table, shares, config.seed)
    splits = {name: table[names == name].reset_index(drop=True) for name in shares}
    if test is not None:
        splits["test"] = test.reset_index(drop=True)
    return {name: splits[name] for name in SPLITS}, removed


def write_splits(splits: dict[str, pd.DataFrame], removed: int, config: SplitConfig, folder: Path) -> SplitReport:
    """Check for leaks, write each split as Parquet and a summary JSON, and return the references."""
    overlap = overlap_counts(splits)
    assert_no_overlap(overlap)
    refs = {name: write_table(frame, folder / f"{name}.parquet") for name, frame in splits.items()}
    counts = {
        name: {str(label): int(count) for label, count in frame["label"].value_counts().sort_index().items()}
        for name, frame in splits.items()
    }
    report = SplitReport(
        **refs,
        class_counts=counts,
        overlap=overlap,
        removed_for_leakage=removed,
        seed=config.seed,
        summary_path=str(folder / "split.json"),
    )
    Path(report.summary_path).write_text(json.dumps(report.model_dump(), indent=2), encoding="utf-8")
    return report


@task(name="split_dataset", cache_policy=STEP_CACHE, persist_result=True)
def split_dataset(clean: DatasetRef, config: SplitConfig, folder: Path, test: DatasetRef | None = None) -> SplitReport:
    """Split the clean rows (and take a given test set as is), leak-free; write Parquet files."""
    splits, removed = split_table(read_table(clean), config, read_table(test) if test else None)
    report = write_splits(splits, removed, config, folder)
    log = get_run_logger()
    log.info(
        "Split %s rows: train %d, validation %d, test %d; overlap %s",
        clean.rows,
        report.train.rows,
        report.validation.rows,
        report.test.rows,
        report.overlap,
    )
    if removed:
        log.warning("Dropped %d training rows whose text is also in the given test set", removed)
    return report
