"""Sweep efficiency: trial-epochs needed to reach a target validation F1 with TPE + median pruning
versus random search without pruning, on the same budget, over several seeds.

Issue 5's setting is the SMS Spam Collection (../shared/data) with the packaged MiniLM. On a CPU a
full trial-epoch over SMS takes minutes, so the defaults train on a stratified sample of the
training split (--train-rows) and truncate texts to 64 tokens; pass larger values on a GPU.
Both arms search learning rate (log, 1e-6..1e-3 unless --lr-min/--lr-max), epochs (1..3), weight
decay and warmup. With the same seed both arms draw the same start-up trials (TPE's first
`sweep.startup_trials` are random): the comparison is paired, and differs once TPE models the space
or the pruner stops a trial.
Run: `python benchmarks/sweep_efficiency.py [--seeds 3] [--trials 8] [--target 0.95] [--lr-min 1e-7]
[--startup-trials 2] [--pruning-min-epochs 2]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMS = ROOT.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
ARMS = {"tpe + median pruning": ("tpe", "median"), "random, no pruning": ("random", "none")}


def prepare(folder: Path, train_rows: int, seed: int):
    """SMS splits (leak-free), the training split sampled to `train_rows`, and the packaged MiniLM."""
    from tasks.config.data import DataConfig
    from tasks.config.split import SplitConfig
    from tasks.data.load import load_table, write_table
    from tasks.data.split import split_table, write_splits
    from tasks.model.resolve import resolve_model

    source = SMS if SMS.is_file() else ROOT / "data/sample/support_tickets.csv"
    columns = (["SMS"], "Label") if source == SMS else (["subject", "body"], "category")
    config = DataConfig(path=str(source), text_columns=columns[0], label_column=columns[1])
    table = load_table(config.path, config).dropna()
    splits, removed = split_table(table, SplitConfig(seed=seed))
    train = splits["train"]
    if len(train) > train_rows:
        train = train.groupby("label", group_keys=False).sample(frac=train_rows / len(train), random_state=seed)
    report = write_splits({**splits, "train": train.reset_index(drop=True)}, removed, SplitConfig(), folder)
    report = report.model_copy(update={"train": write_table(train.reset_index(drop=True), folder / "train.parquet")})
    return source, report, resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def run_arm(arm: str, seed: int, args: argparse.Namespace, splits, model, folder: Path) -> dict:
    """Trials until one reaches the target (or the budget ends); counts trial-epochs."""
    from tasks.config.eval import EvalConfig
    from tasks.config.sweep import SweepConfig
    from tasks.config.train import TrainConfig
    from tasks.sweep.search import open_study
    from tasks.sweep.state import SweepState
    from tasks.sweep.trial import run_trial

    sampler, pruner = ARMS[arm]
    trials, target = args.trials, args.target
    config = SweepConfig(
        target_f1=target,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        trials_per_round=trials,
        max_trials=trials,
        learning_rate_min=args.lr_min,
        learning_rate_max=args.lr_max,
        search=["learning_rate", "epochs", "weight_decay", "warmup_epochs"],  # trial length is searched here
        epochs_min=1,
        epochs_max=3,
        startup_trials=args.startup_trials,
        pruning_min_epochs=args.pruning_min_epochs,
    )
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
    )
    open_study(config, name, state.storage)
    train, log = TrainConfig(max_length=64, early_stopping_patience=0), logging.getLogger("sweep-bench")
    used, pruned, best, reached, started = 0, 0, 0.0, False, time.perf_counter()
    for slot in range(trials):
        result = run_trial(config, state, train, EvalConfig(), 1, slot, False, log)
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
    parser.add_argument("--train-rows", type=int, default=600, help="Training rows sampled from the split.")
    parser.add_argument("--lr-min", type=float, default=1e-6, help="Lower bound of the searched learning rate.")
    parser.add_argument("--lr-max", type=float, default=1e-3, help="Upper bound of the searched learning rate.")
    parser.add_argument("--startup-trials", type=int, default=4, help="Random trials before TPE models the space.")
    parser.add_argument("--pruning-min-epochs", type=int, default=1, help="Earliest epoch the pruner may stop.")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        source, splits, model = prepare(folder / "splits", args.train_rows, seed=42)
        for seed in range(args.seeds):
            for arm in ARMS:
                outcome = run_arm(arm, seed, args, splits, model, folder)
                rows.append((arm, seed, outcome))
                print(f"  {arm:<22} seed {seed}: {outcome}", file=sys.stderr, flush=True)
    print(
        f"data: {source.name}, {splits.train.rows} train / {splits.validation.rows} validation rows; "
        f"target val f1_macro {args.target}; budget {args.trials} trials; "
        f"learning rate {args.lr_min:g}..{args.lr_max:g}; TPE start-up trials {args.startup_trials}; "
        f"pruning from epoch {args.pruning_min_epochs}"
    )
    print(
        f"{'arm':<22} {'seed':>4} {'reached':>7} {'trial-epochs':>12} {'trials':>6} {'pruned':>6} {'best F1':>7} "
        f"{'seconds':>8}"
    )
    for arm, seed, o in rows:
        print(
            f"{arm:<22} {seed:>4} {'yes' if o['reached'] else 'no':>7} {o['trial_epochs']:>12} {o['trials']:>6} "
            f"{o['pruned']:>6} {o['best']:>7.4f} {o['seconds']:>8.0f}"
        )
    for arm in ARMS:
        mine = [o for a, _, o in rows if a == arm]
        print(
            f"{arm:<22} mean trial-epochs {sum(o['trial_epochs'] for o in mine) / len(mine):.1f}, "
            f"reached {sum(o['reached'] for o in mine)}/{len(mine)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
