"""What live MLflow logging costs the training: the same fine-tuning (the packaged MiniLM on the
bundled sample, defaults) with and without the live run's metric stream (`train/loss` every
`--loss-every` steps, each epoch's `val/*`), alternated, into an MLflow run on a temp SQLite store.

Target (issue 17): live logging costs under 2 % of training time.
Run: `python benchmarks/live_logging.py [--epochs 2] [--repeats 2] [--loss-every 10]`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from tasks.config.load import load_config
from tasks.data.split import split_table, write_splits
from tasks.model.finetune import finetune
from tasks.model.progress import metric_stream
from tasks.model.resolve import resolve_model
from tasks.tracking.live import MetricSender

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loss-every", type=int, default=10)
    options = parser.parse_args()
    from mlflow.tracking import MlflowClient

    sample = ROOT / "data/sample/config.yaml"
    config = load_config(sample, [f"train.epochs={options.epochs}", "train.early_stopping_patience=0"])
    raw = pd.read_csv(ROOT / config.data.path, dtype=str)
    table = pd.DataFrame({"text": raw["subject"] + " " + raw["body"], "label": raw[config.data.label_column_name]})
    table = table[table["label"].isin(config.data.allowed_labels or [])].dropna().drop_duplicates("text")
    log = logging.getLogger("benchmark")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        splits, removed = split_table(table, config.split)
        report = write_splits(splits, removed, config.split, folder / "splits")
        model = resolve_model(config.model.candidates[0])
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        experiment = client.create_experiment("live-logging")
        seconds: dict[str, list[float]] = {"without": [], "live": []}
        sent = 0
        for repeat in range(options.repeats):
            for kind in ("without", "live") if repeat % 2 == 0 else ("live", "without"):
                callbacks = []
                if kind == "live":
                    run = client.create_run(experiment).info.run_id
                    sender = MetricSender(uri=client.tracking_uri, run_id=run)
                    callbacks = [metric_stream(sender, log, folder, 30, options.loss_every)]
                started = time.perf_counter()
                trained = finetune(
                    report, model, config.train, config.eval, folder / f"{kind}-{repeat}", callbacks=callbacks
                )
                seconds[kind].append(time.perf_counter() - started)
                if kind == "live":
                    sent = sum(len(client.get_metric_history(run, key)) for key in client.get_run(run).data.metrics)
                print(f"  {kind:8} repeat {repeat + 1}: {seconds[kind][-1]:.1f} s ({len(trained.history)} epochs)")
    plain, live = statistics.median(seconds["without"]), statistics.median(seconds["live"])
    print()
    print("| training | median wall time (s) | metrics logged |")
    print("|---|---|---|")
    print(f"| without live logging | {plain:.1f} | 0 |")
    print(f"| live run, train/loss every {options.loss_every} steps | {live:.1f} | {sent} |")
    print(f"\nlive logging costs {100 * (live - plain) / plain:+.2f}% of training time (target: under 2%)")


if __name__ == "__main__":
    main()
