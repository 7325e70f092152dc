"""Sweep efficiency on data where tuning matters: CLINC150's 15 banking intents with 8 training texts
per intent (--per-class) and 40 validation texts per intent (--val-per-class: the official validation
split's 20 and 20 training texts not trained on, so that a score near the target is known to about
+-0.009), where `tuneloop run`'s defaults stop below a validation target that good configurations
reach. Every arm searches the sweep's default space (learning rate, weight decay, warmup; trials
stop early as `tuneloop run` does) for several sampler seeds, until a completed trial reaches the
target (--trials caps it; --no-stop-at-target spends the whole budget): TPE + median pruning (the
sweep's default) and random search without pruning (the reference); TPE + successive halving and GP
(unpruned: it learns from completed trials only) on request (--arms). The modelling samplers' start-up
trials are points of a space-filling design (seeded by the sweep's seed), the random arm's are random
draws, so the arms no longer share their first trials. It
prints per arm and seed the trials, trial-epochs and seconds until a completed trial first reached
the target (the whole budget when none did), and the best validation F1; per seed, each arm's best
completed trial at equal spend (the fewest trial-epochs any arm spent); then one `tuneloop run` with
defaults; then the wall time of a round of two trials run by the real `tuneloop sweep` command (its
local round: trial flow runs, one at a time in its process or two at once in trial processes of
their own), from the study's records (first trial asked to last trial ended), for trials of 2 and 8
epochs (--round-epochs): one after another on all cores each, one after another on one core each,
and two at once on one core each.

Targets (issue 18): TPE + pruning needs at most 0.6x the trial-epochs of random search on average;
two trials at once take at most 0.6x the wall time of running them one after another. On 2 CPU
cores the settings are tiny (the packaged MiniLM, 32 tokens). "Two at once / one after another on
one core each" gives every trial one device of its own, as N GPUs do (a trial alone does not get a
second GPU): on 2 GPUs a round of 2 trials takes about that share of the sequential time, on N
GPUs about 1/N plus the trial processes' start-up (a fresh process imports torch and loads the
model), which this ratio includes. "Two at once / one
after another on all cores" is what 2 CPU cores give: one trial alone computes on both, so two at
once save nothing but overlapped start-up.
Run: `python benchmarks/sweep_efficiency.py [--seeds 3] [--seed-offset 0] [--trials 40] [--target 0.95]
[--arms median random]` (about 90 minutes on 2 cores); `--only-concurrency [--round-repeats 2]` runs
the round comparison alone (about 8 minutes a repeat). The earlier, noisier instrument (10
validation texts per intent, target 0.94) is `--val-per-class 10 --target 0.94`.
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
ARMS = {
    "tpe + median pruning": ("tpe", "median"),
    "tpe + successive halving": ("tpe", "successive_halving"),
    "gp, no pruning": ("gp", "none"),
    "random, no pruning": ("random", "none"),
}
OFFICIAL_VALIDATION = 20  # validation texts per intent in CLINC150's own split
SHORT = dict(zip(("median", "halving", "gp", "random"), ARMS, strict=True))  # --arms names


def prepare(folder: Path, per_class: int, val_per_class: int, seed: int):
    """CLINC150's banking intents: `per_class` training texts per intent, `val_per_class` validation
    texts per intent (the official validation split's 20, topped up from training texts not trained
    on), 10 test texts per intent, and the packaged MiniLM."""
    import json

    import pandas as pd

    from tasks.config.split import SplitConfig
    from tasks.data.load import write_table
    from tasks.data.split import write_splits
    from tasks.model.resolve import resolve_model

    if not (CLINC / "train.csv").is_file():
        raise SystemExit(f"CLINC150 not found at {CLINC} (see ../shared/data/clinc150/README.md)")
    intents = json.loads((CLINC / "domains.json").read_text())["banking"]

    def read(name: str) -> pd.DataFrame:
        frame = pd.read_csv(CLINC / name).rename(columns={"intent": "label"})
        return frame[frame["label"].isin(intents)]

    def part(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
        return frame.groupby("label", group_keys=False).sample(n=rows, random_state=seed).reset_index(drop=True)

    pool = read("train.csv")
    train = part(pool, per_class)
    validation = part(read("validation.csv"), min(val_per_class, OFFICIAL_VALIDATION))
    if val_per_class > OFFICIAL_VALIDATION:
        unused = pool[~pool["text"].isin(train["text"])]
        validation = pd.concat([validation, part(unused, val_per_class - OFFICIAL_VALIDATION)], ignore_index=True)
    splits = {"train": train, "validation": validation, "test": part(read("test.csv"), 10)}
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
    seconds = time.perf_counter() - started
    epochs = len(trained.history)
    return {
        "reached": best >= target,
        "to_target": epochs,
        "seconds_to_target": seconds,
        "trials_to_target": 1,
        "trial_epochs": epochs,
        "pruned": 0,
        "best": best,
        "seconds": seconds,
    }


ROUNDS = {  # (trials at once, threads per trial: None = torch's default, every core)
    "one after another, all cores each": (1, None),
    "one after another, one core each": (1, 1),
    "two at once, one core each": (2, 1),  # as labelled on any machine (a local round gives each its share)
}


def round_seconds(data: Path, home: Path, concurrent: int, threads: int | None, epochs: int) -> tuple[float, float]:
    """One round of two trials of `epochs` epochs each (fixed: no pruning, no early stop before
    that) by the real `tuneloop sweep` command (a temporary Prefect server, MLflow on SQLite; the
    local round runs one trial at a time in its own process, or each of several at once in a trial
    process it starts), `concurrent` at once, on `threads` threads each (OMP_NUM_THREADS).
    Returns (seconds from the round's first trial asked to its last trial's end, from the study;
    seconds of the whole command)."""
    import os
    import subprocess

    import optuna

    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.pop("OMP_NUM_THREADS", None)
    env |= {"TUNELOOP_HOME": str(home)} | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    settings = {
        "split.train_fraction": 0.138,  # the prepared 120 / 600 / 150 rows, stratified
        "split.validation_fraction": 0.69,
        "split.test_fraction": 0.172,
        "train.max_length": 32,
        "train.epochs": epochs,
        "sweep.pruner": "none",
        "sweep.max_concurrent_trials": concurrent,
    }
    command = [sys.executable, "-m", "flows.cli", "sweep", "--data", str(data), "--target-f1", "1.0", "--json"]
    command += ["--trials-per-round", "2", "--max-rounds", "1"]
    command += [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 5:  # 5: the budget (one round) spent, as asked
        raise SystemExit(f"tuneloop sweep exited {done.returncode}: {done.stderr[-3000:]}")
    storage = f"sqlite:///{home / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 2, trials
    ends = [trial.datetime_complete for trial in trials if trial.datetime_complete]
    starts = [trial.datetime_start for trial in trials if trial.datetime_start]
    return (max(ends) - min(starts)).total_seconds(), seconds


def concurrency(splits, folder: Path, epochs: list[int], repeats: int) -> list[dict]:
    """Each ROUNDS setting `repeats` times for each trial length, one command at a time."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "clinc-banking.csv"
    parts = [pd.read_parquet(part.path)[["text", "label"]] for part in (splits.train, splits.validation, splits.test)]
    pd.concat(parts, ignore_index=True).to_csv(data, index=False)
    rows = []
    for length in epochs:
        for repeat in range(repeats):
            for setting, (concurrent, threads) in ROUNDS.items():
                home = folder / f"{length}-{repeat}-{concurrent}-{threads}"
                span, seconds = round_seconds(data, home, concurrent, threads, length)
                rows.append({"epochs": length, "repeat": repeat, "setting": setting, "span": span, "command": seconds})
                print(f"  {length} epochs, {setting}: round {span:.1f} s, command {seconds:.1f} s", file=sys.stderr)
    return rows


def print_concurrency(rows: list[dict]) -> None:
    """The rounds' seconds per setting and trial length, and the ratios the target is about."""
    names = list(ROUNDS)
    print(
        "| trial epochs | repeat | " + " | ".join(f"{name}: round s (command s)" for name in names) + " | at once / "
        "one after another on one core each (a device per trial: N GPUs) | at once / one after another on all cores "
        "(2 CPU cores shared) |"
    )
    print("|---|---|" + "---|" * (len(names) + 2))
    for length, repeat in sorted({(row["epochs"], row["repeat"]) for row in rows}):
        mine = {row["setting"]: row for row in rows if (row["epochs"], row["repeat"]) == (length, repeat)}
        cells = " | ".join(f"{mine[name]['span']:.1f} ({mine[name]['command']:.0f})" for name in names)
        together = mine[names[2]]["span"]
        print(
            f"| {length} | {repeat} | {cells} | {together / mine[names[1]]['span']:.2f} | "
            f"{together / mine[names[0]]['span']:.2f} |"
        )


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
        "pruning_min_steps": args.pruning_min_steps,
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
    study = open_study(config, name, state.storage, validation_rows=splits.validation.rows)
    train, log = TrainConfig(max_length=32), logging.getLogger("sweep-bench")
    used, pruned, best, started = 0, 0, 0.0, time.perf_counter()
    to_target: tuple[int, float, int] | None = None  # (trial-epochs, seconds, trials) when first reached
    completed: list[tuple[int, float]] = []  # (trial-epochs spent when it ended, its score): models kept
    for slot in range(trials):  # the whole budget: "to target" and "whole budget" from one run
        asked = ask(study)
        asked.set_user_attr("round", 1)
        suggest(asked, config, train)
        result = run_trial(config, state, train, EvalConfig(), asked.number, False, log)
        scores = " ".join(f"{record['val'].get('f1_macro', 0.0):.3f}" for record in result.history)
        print(f"    trial {slot} {result.state:<8} {result.params} val f1 by epoch: {scores}", file=sys.stderr)
        used += len(result.history)
        pruned += result.state == "pruned"
        best = max(best, result.score or 0.0)
        if result.state == "complete":
            completed.append((used, result.score or 0.0))
        if to_target is None and result.state == "complete" and (result.score or 0.0) >= target:
            to_target = (used, time.perf_counter() - started, slot + 1)
            if args.stop_at_target:
                break
    seconds = time.perf_counter() - started
    return {
        "reached": to_target is not None,
        "to_target": to_target[0] if to_target else used,  # not reached: the whole budget
        "seconds_to_target": to_target[1] if to_target else seconds,
        "trials_to_target": to_target[2] if to_target else trials,
        "trial_epochs": used,
        "pruned": pruned,
        "best": best,
        "seconds": seconds,
        "completed": completed,
    }


def best_within(outcome: dict, epochs: float) -> float:
    """The best score of the trials that completed (and so kept a model) within `epochs` trial-epochs."""
    return max((score for used, score in outcome["completed"] if used <= epochs), default=0.0)


def equal_spend(rows: list[tuple[str, int, dict]], arms: list[str]) -> None:
    """Print each arm's best completed trial at the same spend per seed (the least any arm spent on
    its whole budget): a measure that a missed target does not bias towards the arm that spends less."""
    print("| seed | equal spend (trial-epochs) | " + " | ".join(f"{arm}: best val F1" for arm in arms) + " |")
    print("|---|---|" + "---|" * len(arms))
    for seed in sorted({seed for arm, seed, _ in rows if arm in arms}):
        mine = {arm: o for arm, s, o in rows if s == seed and arm in arms}
        spend = min(o["trial_epochs"] for o in mine.values())
        cells = " | ".join(f"{best_within(mine[arm], spend):.4f}" for arm in arms)
        print(f"| {seed} | {spend} | {cells} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40, help="Trial budget per arm and seed.")
    parser.add_argument("--target", type=float, default=0.95, help="Validation macro F1 to reach.")
    parser.add_argument("--per-class", type=int, default=8, help="Training texts per intent.")
    parser.add_argument(
        "--val-per-class",
        type=int,
        default=40,
        help="Validation texts per intent (beyond the official split's 20: from training texts not trained on).",
    )
    parser.add_argument(
        "--lr-min", type=float, help="Lower bound of the searched learning rate (default: the sweep's)."
    )
    parser.add_argument(
        "--lr-max", type=float, help="Upper bound of the searched learning rate (default: the sweep's)."
    )
    parser.add_argument("--search", nargs="+", help="Searched hyperparameters (default: the sweep's).")
    parser.add_argument(
        "--startup-trials",
        type=int,
        help="Start-up trials (points of the space-filling design) before TPE models the space.",
    )
    parser.add_argument("--pruning-min-epochs", type=int, help="Earliest epoch the pruner may stop.")
    parser.add_argument("--pruning-min-steps", type=int, help="Optimizer steps after warmup before it may stop one.")
    parser.add_argument("--epochs-max", type=int, default=12, help="Most epochs a trial may train, when searched.")
    parser.add_argument("--seed-offset", type=int, default=0, help="First sampler seed.")
    parser.add_argument(
        "--stop-at-target",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="End each arm at its first trial that reaches the target (default); with a large --trials no arm "
        "misses, so trial-epochs to target are measured, not capped. --no-stop-at-target spends every arm's whole "
        "budget (for the equal-spend comparison).",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(SHORT),
        default=["median", "random"],
        help="Arms to run: TPE + median pruning (the default) and random search (the reference); also TPE + "
        "successive halving, GP (unpruned).",
    )
    parser.add_argument(
        "--round-epochs",
        type=int,
        nargs="*",
        default=[2, 8],
        help="Trial lengths (epochs) of the concurrency comparison's rounds (none: no round comparison).",
    )
    parser.add_argument("--round-repeats", type=int, default=1, help="Rounds per setting and trial length.")
    parser.add_argument(
        "--only-concurrency", action="store_true", help="Run only the concurrency comparison (a few minutes)."
    )
    args = parser.parse_args()
    args.arms = [SHORT[name] for name in args.arms]
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        splits, model = prepare(folder / "splits", args.per_class, args.val_per_class, seed=42)
        if args.only_concurrency:
            print_concurrency(concurrency(splits, folder / "concurrency", args.round_epochs, args.round_repeats))
            return 0
        for seed in range(args.seed_offset, args.seed_offset + args.seeds):
            for arm in args.arms:
                outcome = run_arm(arm, seed, args, splits, model, folder)
                rows.append((arm, seed, outcome))
                print(f"  {arm:<22} seed {seed}: {outcome}", file=sys.stderr, flush=True)
        defaults = defaults_arm(splits, model, folder, args.target)
        rows.append(("tuneloop run defaults", 0, defaults))
        rounds = concurrency(splits, folder / "concurrency", args.round_epochs, args.round_repeats)
    from tasks.core.metrics import sampling_error
    from tasks.sweep.search import space_lines

    example = arm_config(args, "tpe", "median", 0)
    error = sampling_error(args.target, splits.validation.rows)  # binomial, one standard error
    print(
        f"data: CLINC150 banking, {splits.train.rows} train / {splits.validation.rows} validation rows (a score near "
        f"the target is known to about +-{error:.3f}); target val f1_macro {args.target}; budget {args.trials} "
        f"trials; searched: {'; '.join(space_lines(example))}; "
        f"TPE start-up trials {example.startup_trials}; pruning from epoch {example.pruning_min_epochs}, "
        f"{example.pruning_min_steps} steps after warmup"
    )
    print(
        "| arm | seed | reached | trials to target | trial-epochs to target | seconds to target "
        "| trial-epochs, whole budget | pruned | best val F1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, seed, o in rows:
        print(
            f"| {arm} | {seed} | {'yes' if o['reached'] else 'no'} | {o['trials_to_target']} | {o['to_target']} | "
            f"{o['seconds_to_target']:.0f} | {o['trial_epochs']} | {o['pruned']} | {o['best']:.4f} |"
        )
    means: dict[str, dict[str, float]] = {}
    for arm in args.arms:
        mine = [o for a, _, o in rows if a == arm]
        means[arm] = {key: sum(o[key] for o in mine) / len(mine) for key in ("to_target", "trial_epochs", "best")}
        print(
            f"{arm}: reached {sum(o['reached'] for o in mine)}/{len(mine)}; mean trial-epochs to target "
            f"{means[arm]['to_target']:.1f} (not reached: the whole budget), whole budget "
            f"{means[arm]['trial_epochs']:.1f}; mean best val F1 {means[arm]['best']:.4f}"
        )
    random = means.get("random, no pruning")
    for arm in args.arms:
        if random and arm != "random, no pruning":
            print(
                f"{arm} / random: trial-epochs to target {means[arm]['to_target'] / random['to_target']:.2f}, "
                f"whole budget {means[arm]['trial_epochs'] / random['trial_epochs']:.2f} (target <= 0.6)"
            )
    equal_spend(rows, args.arms)
    print_concurrency(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
