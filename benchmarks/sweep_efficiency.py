"""Sweep efficiency on data where tuning matters: CLINC150's 15 banking intents with few training
examples per intent (--per-class), where `tuneloop run`'s defaults miss a validation target that a
good configuration reaches. At the same trial budget and over several seeds it compares TPE +
median pruning, random search without pruning, and one `tuneloop run` with defaults, printing
trial-epochs and wall time to the target; then the wall time of two trials run one after another
versus at once (two processes, as two trial flow runs on two workers).

Targets (issue 18): TPE + pruning needs at most 0.6x the trial-epochs of random search on average;
two trials at once take at most 0.6x the wall time of running them one after another. On 2 CPU
cores the defaults are tiny (the packaged MiniLM, 32 tokens, a few rows per intent); on a CPU two
trials share the same cores, so their ratio shows the orchestration working, not a speed-up: on
N GPUs each trial has its own device and a round of N trials takes about 1/N of the sequential time.
Run: `python benchmarks/sweep_efficiency.py [--seeds 3] [--trials 8] [--target 0.95] [--per-class 8]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT.parent / "shared" / "data" / "clinc150"
ARMS = {"tpe + median pruning": ("tpe", "median"), "random, no pruning": ("random", "none")}


def prepare(folder: Path, per_class: int, seed: int):
    """CLINC150's banking intents: `per_class` training texts per intent, 10 validation texts per
    intent (both from the official splits), and the packaged MiniLM."""
    import json

    import pandas as pd

    from tasks.config.split import SplitConfig
    from tasks.data.load import write_table
    from tasks.data.split import write_splits
    from tasks.model.resolve import resolve_model

    if not (CLINC / "train.csv").is_file():
        raise SystemExit(f"CLINC150 not found at {CLINC} (see ../shared/data/clinc150/README.md)")
    intents = json.loads((CLINC / "domains.json").read_text())["banking"]

    def part(name: str, rows: int) -> pd.DataFrame:
        frame = pd.read_csv(CLINC / name).rename(columns={"intent": "label"})
        frame = frame[frame["label"].isin(intents)]
        return frame.groupby("label", group_keys=False).sample(n=rows, random_state=seed).reset_index(drop=True)

    splits = {
        "train": part("train.csv", per_class),
        "validation": part("validation.csv", 10),
        "test": part("test.csv", 10),
    }
    report = write_splits(splits, 0, SplitConfig(), folder)
    report = report.model_copy(update={"train": write_table(splits["train"], folder / "train.parquet")})
    return report, resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def defaults_arm(splits, model, folder: Path, target: float) -> dict:
    """One `tuneloop run` with the default training settings (early stopping, planned epochs)."""
    from tasks.config.eval import EvalConfig
    from tasks.config.train import TrainConfig
    from tasks.model.finetune import finetune

    started = time.perf_counter()
    trained = finetune(splits, model, TrainConfig(max_length=32), EvalConfig(), folder / "defaults")
    best = max(record.val["f1_macro"] for record in trained.history)
    return {
        "reached": best >= target,
        "trial_epochs": len(trained.history),
        "trials": 1,
        "pruned": 0,
        "best": best,
        "seconds": time.perf_counter() - started,
    }


def one_trial(splits, model, folder: str, threads: int) -> float:
    """Seconds of one fixed 2-epoch trial (the unit the concurrency comparison runs)."""
    import torch

    from tasks.config.eval import EvalConfig
    from tasks.config.train import TrainConfig
    from tasks.model.finetune import finetune

    torch.set_num_threads(threads)
    started = time.perf_counter()
    config = TrainConfig(max_length=32, epochs=2, learning_rate=1e-4, early_stopping_patience=0)
    finetune(splits, model, config, EvalConfig(), Path(folder))
    return time.perf_counter() - started


def concurrency(splits, model, folder: Path) -> tuple[float, float]:
    """(seconds for two trials one after another, seconds for two at once in two processes)."""
    import multiprocessing
    import os

    cores = os.cpu_count() or 2
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    for n in range(2):
        with context.Pool(1) as pool:
            pool.apply(one_trial, (splits, model, str(folder / f"seq-{n}"), cores))
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    with context.Pool(2) as pool:
        pool.starmap(one_trial, [(splits, model, str(folder / f"par-{n}"), max(1, cores // 2)) for n in range(2)])
    return sequential, time.perf_counter() - started


def arm_config(args: argparse.Namespace, sampler: str, pruner: str, seed: int) -> Any:
    """The sweep settings of one arm: the sweep's defaults, with the arm's sampler and pruner and
    what the command line changed."""
    from tasks.config.sweep import SweepConfig

    changes = {
        "learning_rate_min": args.lr_min,
        "learning_rate_max": args.lr_max,
        "search": args.search,
        "startup_trials": args.startup_trials,
        "pruning_min_epochs": args.pruning_min_epochs,
    }
    return SweepConfig.model_validate(
        {
            "target_f1": args.target,
            "sampler": sampler,
            "pruner": pruner,
            "seed": seed,
            "trials_per_round": args.trials,
            "max_trials": args.trials,
            "epochs_min": 1,
            "epochs_max": args.epochs_max,
            **{name: value for name, value in changes.items() if value is not None},
        }
    )


def run_arm(arm: str, seed: int, args: argparse.Namespace, splits, model, folder: Path) -> dict:
    """Trials until one reaches the target (or the budget ends); counts trial-epochs."""
    from tasks.config.eval import EvalConfig
    from tasks.config.train import TrainConfig
    from tasks.sweep.record import ask
    from tasks.sweep.search import open_study, suggest
    from tasks.sweep.state import Budget, SweepState
    from tasks.sweep.trial import run_trial

    sampler, pruner = ARMS[arm]
    trials, target = args.trials, args.target
    config = arm_config(args, sampler, pruner, seed)
    name = f"{sampler}-{pruner}-{seed}"
    state = SweepState(
        sweep_id=name,
        folder=str(folder / name),
        started_at=datetime.now(UTC),
        study_name=name,
        storage=f"sqlite:///{folder / 'optuna.db'}",
        splits=splits,
        model=model,
        parent_run_id="",
        budget=Budget(max_rounds=1, max_trials=trials, max_hours=24),
    )
    study = open_study(config, name, state.storage)
    train, log = TrainConfig(max_length=32), logging.getLogger("sweep-bench")
    used, pruned, best, reached, started = 0, 0, 0.0, False, time.perf_counter()
    for slot in range(trials):
        asked = ask(study)
        asked.set_user_attr("round", 1)
        suggest(asked, config, train)
        result = run_trial(config, state, train, EvalConfig(), asked.number, False, log)
        scores = " ".join(f"{record['val'].get('f1_macro', 0.0):.3f}" for record in result.history)
        print(f"    trial {slot} {result.state:<8} {result.params} val f1 by epoch: {scores}", file=sys.stderr)
        used += len(result.history)
        pruned += result.state == "pruned"
        best = max(best, result.score or 0.0)
        reached = result.state == "complete" and (result.score or 0.0) >= target
        if reached:
            break
    return {
        "reached": reached,
        "trial_epochs": used,
        "trials": slot + 1,
        "pruned": pruned,
        "best": best,
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8, help="Trial budget per arm and seed.")
    parser.add_argument("--target", type=float, default=0.95, help="Validation macro F1 to reach.")
    parser.add_argument("--per-class", type=int, default=8, help="Training texts per intent.")
    parser.add_argument(
        "--lr-min", type=float, help="Lower bound of the searched learning rate (default: the sweep's)."
    )
    parser.add_argument(
        "--lr-max", type=float, help="Upper bound of the searched learning rate (default: the sweep's)."
    )
    parser.add_argument("--search", nargs="+", help="Searched hyperparameters (default: the sweep's).")
    parser.add_argument("--startup-trials", type=int, help="Random trials before TPE models the space.")
    parser.add_argument("--pruning-min-epochs", type=int, help="Earliest epoch the pruner may stop.")
    parser.add_argument("--epochs-max", type=int, default=12, help="Most epochs a trial may train, when searched.")
    parser.add_argument("--seed-offset", type=int, default=0, help="First sampler seed.")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        splits, model = prepare(folder / "splits", args.per_class, seed=42)
        for seed in range(args.seed_offset, args.seed_offset + args.seeds):
            for arm in ARMS:
                outcome = run_arm(arm, seed, args, splits, model, folder)
                rows.append((arm, seed, outcome))
                print(f"  {arm:<22} seed {seed}: {outcome}", file=sys.stderr, flush=True)
        defaults = defaults_arm(splits, model, folder, args.target)
        rows.append(("tuneloop run defaults", 0, defaults))
        sequential, together = concurrency(splits, model, folder / "concurrency")
    from tasks.sweep.search import space_lines

    example = arm_config(args, "tpe", "median", 0)
    print(
        f"data: CLINC150 banking, {splits.train.rows} train / {splits.validation.rows} validation rows; "
        f"target val f1_macro {args.target}; budget {args.trials} trials; searched: {'; '.join(space_lines(example))}; "
        f"TPE start-up trials {example.startup_trials}; pruning from epoch {example.pruning_min_epochs}"
    )
    print("| arm | seed | reached | trial-epochs | trials | pruned | best F1 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, seed, o in rows:
        print(
            f"| {arm} | {seed} | {'yes' if o['reached'] else 'no'} | {o['trial_epochs']} | {o['trials']} | "
            f"{o['pruned']} | {o['best']:.4f} | {o['seconds']:.0f} |"
        )
    means = {}
    for arm in ARMS:
        mine = [o for a, _, o in rows if a == arm]
        means[arm] = sum(o["trial_epochs"] for o in mine) / len(mine)
        print(f"{arm}: mean trial-epochs {means[arm]:.1f}, reached {sum(o['reached'] for o in mine)}/{len(mine)}")
    ratio = means["tpe + median pruning"] / max(means["random, no pruning"], 1e-9)
    print(f"trial-epochs, TPE + pruning / random: {ratio:.2f} (target <= 0.6)")
    print(
        f"two trials one after another {sequential:.0f} s, at once {together:.0f} s: ratio "
        f"{together / sequential:.2f} (target <= 0.6; on a CPU they share the cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
