"""Is the model tuneloop produces good? Three arms side by side on the same splits of real data:

- `tfidf`: tuneloop's own baseline (word and character TF-IDF, logistic regression);
- `plain loop`: the same packaged MiniLM fine-tuned by a plain PyTorch loop (benchmarks/plain_loop.py:
  AdamW, constant learning rate, batch 32, 64 tokens), scored on test after every epoch; its best
  epoch on test is an upper bound no validation-driven run can count on;
- `tuneloop run`: the real command with its defaults (only the data options are given).

tuneloop runs first; the other two arms train on the very splits it wrote. Targets (issue 15):
`tuneloop run` within 0.005 test macro F1 of the plain loop's best epoch or better, and above
TF-IDF, wherever the plain loop beats TF-IDF; macro F1 >= 0.95 on the full CLINC150 test split.

Datasets: `sample` (data/sample), `sms` (../shared/data/sms_spam), `clinc-banking` (CLINC150's
15 banking intents) and `clinc150` (all 150 intents, official test split; about an hour per arm
on 2 CPU cores). Run: `python benchmarks/quality.py --datasets sample,sms,clinc-banking --seeds 1,2,3`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
TUNELOOP = Path(sys.executable).with_name("tuneloop")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def clinc_files(folder: Path, domain: str | None) -> list[str]:
    """CLINC150 as tuneloop options: train + validation as the data, the official test split as the test
    set (`domain`: only that domain's intents)."""
    source = SHARED / "clinc150"
    intents = json.loads((source / "domains.json").read_text())[domain] if domain else None

    def part(*names: str) -> pd.DataFrame:
        frame = pd.concat([pd.read_csv(source / name) for name in names], ignore_index=True)
        return frame[frame["intent"].isin(intents)] if intents else frame

    part("train.csv", "validation.csv").to_csv(folder / "clinc-data.csv", index=False)
    part("test.csv").to_csv(folder / "clinc-test.csv", index=False)
    data = ["--data", str(folder / "clinc-data.csv"), "--test-data", str(folder / "clinc-test.csv")]
    return [*data, "--text-column", "text", "--label-column", "intent"]


def dataset_options(name: str, folder: Path) -> list[str] | None:
    """The `tuneloop run` options that point at a dataset, or None when its files are absent."""
    if name == "sample":
        return ["--config", str(ROOT / "data" / "sample" / "config.yaml")]
    if name == "sms":
        sms = SHARED / "sms_spam" / "SMSSpamCollection.tsv"
        return ["--data", str(sms), "--text-column", "SMS", "--label-column", "Label"] if sms.is_file() else None
    if name.startswith("clinc"):
        if not (SHARED / "clinc150" / "train.csv").is_file():
            return None
        return clinc_files(folder, name.removeprefix("clinc-") if name != "clinc150" else None)
    raise SystemExit(f"unknown dataset {name!r}: use sample, sms, clinc-<domain> (e.g. clinc-banking) or clinc150")


def run_tuneloop(options: list[str], seed: int, home: Path, extra: list[str]) -> dict[str, Any]:
    """`tuneloop run` as a user types it; its --json summary and wall time."""
    environment = {**os.environ, "TUNELOOP_HOME": str(home)}
    overrides = [part for assignment in extra for part in ("--set", assignment)]
    command = [str(TUNELOOP), "run", *options, "--set", f"split.seed={seed}", *overrides, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tuneloop run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_seconds": seconds}


def splits_of(summary: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The train, validation and test splits the tuneloop run wrote."""
    folder = Path(summary["run_folder"]) / "splits"
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "validation", "test")}


def progress(line: str) -> None:
    """One line on stderr as each arm ends, so a long or cut-short run shows how far it got."""
    print(f"  {line}", file=sys.stderr, flush=True)


def compare(name: str, seed: int, options: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The three arms on one dataset and split seed, as table rows."""
    from benchmarks.plain_loop import plain_finetune
    from tasks.model.baseline import fit_tfidf_baseline
    from tasks.model.resolve import resolve_model

    with tempfile.TemporaryDirectory(prefix="tuneloop-quality-") as home:
        ours = run_tuneloop(options, seed, Path(home), args.set or [])
        test_f1 = ours["metrics"]["test"]["f1_macro"]
        progress(f"{name} seed {seed}: tuneloop run test macro F1 {test_f1:.4f} ({ours['wall_seconds']:.0f} s)")
        splits = splits_of(ours)
        started = time.perf_counter()
        baseline = fit_tfidf_baseline(splits["train"], splits["validation"], splits["test"], seed)
        tfidf_seconds = time.perf_counter() - started
        progress(f"{name} seed {seed}: TF-IDF test macro F1 {baseline.test.f1_macro:.4f} ({tfidf_seconds:.0f} s)")
        started = time.perf_counter()
        history = []
        if not args.no_plain:
            history = plain_finetune(
                resolve_model(MINILM).path,
                splits["train"],
                splits["validation"],
                splits["test"],
                epochs=args.plain_epochs,
                learning_rate=args.plain_lr,
                seed=seed,
            )
        plain_seconds = time.perf_counter() - started
    test = ours["metrics"]["test"]
    rows = [("tfidf", baseline.test.f1_macro, baseline.test.f1_weighted, "-", tfidf_seconds)]
    if history:
        best = max(history, key=lambda epoch: epoch["test"]["macro"])
        rows.append(
            (
                f"plain loop (best of {args.plain_epochs})",
                best["test"]["macro"],
                best["test"]["weighted"],
                best["epoch"],
                plain_seconds,
            )
        )
    rows += [
        (
            "tuneloop run",
            test["f1_macro"],
            test["f1_weighted"],
            f"{ours['epochs']} (best {ours['best_epoch']})",
            ours["wall_seconds"],
        ),
    ]
    sizes = f"{len(splits['train'])}/{len(splits['validation'])}/{len(splits['test'])}"
    return [
        {
            "dataset": name,
            "seed": seed,
            "rows": sizes,
            "arm": arm,
            "macro": macro,
            "weighted": weighted,
            "epochs": epochs,
            "seconds": seconds,
        }
        for arm, macro, weighted, epochs, seconds in rows
    ] + [{"dataset": name, "seed": seed, "plain_history": history}]


def verdict(rows: list[dict[str, Any]]) -> str:
    """Whether tuneloop met the targets on one dataset and seed."""
    scores = {row["arm"].split(" (")[0]: row["macro"] for row in rows if "arm" in row}
    ours, tfidf = scores["tuneloop run"], scores["tfidf"]
    plain = scores.get("plain loop", 0.0)
    parts = [f"vs plain best {ours - plain:+.4f}", f"vs tfidf {ours - tfidf:+.4f}"]
    # Within 0.005 of the plain loop's best epoch; above TF-IDF wherever the plain loop beats it.
    met = ours >= plain - 0.005 and (ours > tfidf or plain <= tfidf)
    if rows[0]["dataset"] == "clinc150":
        parts.append(f">= 0.95: {ours >= 0.95}")
        met = met and ours >= 0.95
    return f"{'met' if met else 'NOT met'} ({', '.join(parts)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sample,sms,clinc-banking", help="Comma-separated dataset names.")
    parser.add_argument("--seeds", default="42", help="Comma-separated split seeds.")
    parser.add_argument("--plain-epochs", type=int, default=6, help="Epochs of the plain loop.")
    parser.add_argument("--plain-lr", type=float, default=1e-4, help="Learning rate of the plain loop.")
    parser.add_argument("--no-plain", action="store_true", help="Skip the plain loop (to compare tuneloop settings).")
    parser.add_argument("--set", action="append", help="Extra --set for tuneloop (to measure a non-default).")
    parser.add_argument("--json", type=Path, help="Also write every row (and the plain loop's epochs) here.")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the plain loop's load report is not a result
    transformers_logging.disable_progress_bar()
    rows: list[dict[str, Any]] = []
    print(
        f"{'dataset':<14} {'seed':>4} {'train/val/test':>15}  {'arm':<24} {'macro F1':>8} {'wtd F1':>7} "
        f"{'epochs':>12} {'wall s':>7}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets.split(","):
            options = dataset_options(name, Path(scratch))
            if options is None:
                print(f"{name:<14} skipped: its files are not in {SHARED}")
                continue
            for seed in (int(seed) for seed in args.seeds.split(",")):
                result = compare(name, seed, options, args)
                for row in result[:-1]:
                    print(
                        f"{row['dataset']:<14} {row['seed']:>4} {row['rows']:>15}  {row['arm']:<24} "
                        f"{row['macro']:>8.4f} {row['weighted']:>7.4f} {row['epochs']!s:>12} {row['seconds']:>7.0f}",
                        flush=True,
                    )
                print(f"{'':<14} {'':>4} {'':>15}  {verdict(result)}", flush=True)
                rows += result
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
