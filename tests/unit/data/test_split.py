import pandas as pd
import pytest

from tasks.config.split import SplitConfig
from tasks.core.errors import SplitError
from tasks.data.split import overlap_counts, split_table
from tests.helpers.tables import clean_table


def with_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """Copies of the first 15 rows whose case and spacing differ: the same text for the leak check."""
    copies = table.head(15).copy()
    copies["id"] = copies["id"] + "-copy"
    copies["text"] = "  " + copies["text"].str.upper().str.replace(" ", "   ") + "\n"
    return pd.concat([table, copies], ignore_index=True)


def test_split_is_stratified_and_covers_every_row() -> None:
    table = clean_table(40)
    splits, removed = split_table(table, SplitConfig())
    assert removed == 0
    assert sum(len(frame) for frame in splits.values()) == len(table)
    assert set(pd.concat(splits.values())["id"]) == set(table["id"])
    for frame in splits.values():
        assert set(frame["label"]) == {"billing", "shipping", "technical"}
    assert len(splits["train"]) == pytest.approx(0.8 * len(table), abs=3)


def test_equal_texts_land_in_one_split_and_a_naive_split_would_leak() -> None:
    from sklearn.model_selection import train_test_split

    table = with_duplicates(clean_table(30))
    naive_train, naive_test = train_test_split(table, test_size=0.5, random_state=0)
    assert overlap_counts({"train": naive_train, "test": naive_test})["train/test"] > 0
    splits, _ = split_table(table, SplitConfig())
    assert overlap_counts(splits) == {"train/validation": 0, "train/test": 0, "validation/test": 0}


def test_seed_makes_splits_reproducible() -> None:
    table = clean_table(30)
    first, _ = split_table(table, SplitConfig(seed=1))
    again, _ = split_table(table, SplitConfig(seed=1))
    other, _ = split_table(table, SplitConfig(seed=2))
    assert first["test"]["id"].tolist() == again["test"]["id"].tolist()
    assert first["test"]["id"].tolist() != other["test"]["id"].tolist()


def test_given_test_set_is_kept_and_its_texts_leave_training() -> None:
    table = clean_table(30)
    test = table.sample(9, random_state=0)
    splits, removed = split_table(table, SplitConfig(), test=test)
    assert removed == 9
    assert splits["test"]["id"].tolist() == test["id"].tolist()
    assert overlap_counts(splits) == {"train/validation": 0, "train/test": 0, "validation/test": 0}
    assert len(splits["validation"]) == pytest.approx((len(table) - 9) / 9, abs=2)


def test_too_small_class_is_named_with_the_minimum() -> None:
    table = pd.concat(
        [clean_table(30), pd.DataFrame({"id": ["r1", "r2"], "text": ["x one", "x two"], "label": ["rare", "rare"]})],
        ignore_index=True,
    )
    with pytest.raises(SplitError, match=r"'rare' has 2 distinct text\(s\); each class needs at least 10"):
        split_table(table, SplitConfig())
