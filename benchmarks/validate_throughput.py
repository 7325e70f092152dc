"""Validation throughput: the dataset contract on 100k and 1M synthetic rows.

Target (issue 2): 1M rows in under 10 s on 2 cores. Prints a table of seconds and rows/s for
the whole gate (derived columns, both Great Expectations passes, quarantine, clean Parquet) with
and without Data Docs. Run: `make bench-validate` or `python benchmarks/validate_throughput.py`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config.data import DataConfig
from tasks.config.validation import ValidationConfig
from tasks.data.load import table_sha256
from tasks.data.validate import validate_table

WORDS = np.array(
    [
        "the",
        "order",
        "refund",
        "login",
        "crash",
        "parcel",
        "invoice",
        "password",
        "app",
        "slow",
        "card",
        "late",
        "box",
        "account",
        "delivery",
        "charged",
        "twice",
        "error",
        "blank",
        "sync",
        "update",
        "help",
        "please",
        "team",
    ]
)


def synthetic_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` short texts in 4 classes, with about 0.5% duplicates and 0.1% blank or unlabelled rows."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(WORDS), size=(rows, 8))
    texts = pd.Series([" ".join(words) for words in WORDS[picks]], dtype="string")
    texts = texts + " #" + pd.Series(np.arange(rows)).astype("string")
    labels = pd.Series(
        np.array(["billing", "technical", "shipping", "account"])[rng.integers(0, 4, rows)], dtype="string"
    )
    duplicates = rng.choice(rows, size=rows // 200, replace=False)
    texts.iloc[duplicates[1:]] = texts.iloc[duplicates[0]]
    labels.iloc[duplicates] = labels.iloc[duplicates[0]]
    texts.iloc[rng.choice(rows, size=rows // 1000, replace=False)] = "  "
    labels.iloc[rng.choice(rows, size=rows // 1000, replace=False)] = pd.NA
    ids = pd.Series(np.arange(rows)).astype("string")
    return pd.DataFrame({"id": ids, "text": texts, "label": labels})


def measure(rows: int, data_docs: bool) -> tuple[float, int]:
    table = synthetic_table(rows)
    config = ValidationConfig(data_docs=data_docs)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        data = DataConfig(path="synthetic.csv")  # not the sample's path: any label
        report = validate_table(table, "synthetic", table_sha256(table), config, data, Path(folder))
        seconds = time.perf_counter() - start
    assert report.passed, report.problems
    return seconds, report.quarantined_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    measure(1000, data_docs=True)  # warm up imports so they are not timed
    print(f"{'rows':>10} {'data docs':>9} {'seconds':>8} {'rows/s':>10} {'quarantined':>11}")
    for rows in args.rows:
        for data_docs in (False, True):
            seconds, quarantined = measure(rows, data_docs)
            print(
                f"{rows:>10,} {'yes' if data_docs else 'no':>9} {seconds:>8.2f} {rows / seconds:>10,.0f} "
                f"{quarantined:>11,}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
