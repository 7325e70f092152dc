"""Sweep efficiency over hundreds of sampler seeds, by replaying recorded learning curves: what
`benchmarks/sweep_efficiency.py` measures (trial-epochs until a completed trial reaches the target,
TPE + pruning against random search), without training. Each trial is asked from tuneloop's own
sampler and pruner (`tasks.sweep.search.study_sampler` / `study_pruner`, in an in-memory study) and
trains "as" the recorded trial nearest to its parameters (in log learning rate above all, which
decides these curves; warmup and weight decay break ties), reporting that trial's validation macro
F1 epoch by epoch, so the pruner stops it where it would have stopped the real one.

Why: on the real benchmark a seed's outcome is mostly luck (whether an early trial lands on a good
learning rate), so 3 or 9 seeds of it cannot tell two search settings apart, and 40 seeds would take
a day on 2 cores. The replay takes seconds per hundred seeds; the real benchmark then checks the
chosen setting on real training. The curves (`benchmarks/data/clinc-banking-curves.json`) are every
completed trial of the real benchmark's runs on this repository (CLINC150 banking, 120 training and
600 validation rows, the packaged MiniLM at 32 tokens, the default search space); `--from-logs
FILE...` rebuilds them from its stderr logs (its "trial N complete {...} val f1 by epoch: ..." lines).
A replay knows only the recorded configurations: it says how a search setting explores this one
problem, not how a new problem will behave.

Run: `python benchmarks/sweep_replay.py [--seeds 540] [--startup-trials N] [--sampler tpe|gp]
[--pruner auto|median|...] [--random-start] [--listed 18]` (seconds).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CURVES = ROOT / "benchmarks" / "data" / "clinc-banking-curves.json"
VALIDATION_ROWS = 600  # the real benchmark's validation split
LINE = re.compile(r"\s+trial \d+ complete\s+(\{.*\}) val f1 by epoch: (.*)$")
# Distance between configurations: log10 learning rate, warmup (epochs), weight decay.
WEIGHTS = (1.0, 0.05, 0.5)


def read_logs(paths: list[Path]) -> list[dict[str, Any]]:
    """The completed trials of sweep_efficiency.py stderr logs, one per configuration."""
    found: dict[tuple[float, ...], dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if match := LINE.match(line):
                params = ast.literal_eval(match.group(1))
                key = tuple(round(params[name], 12) for name in sorted(params))
                found[key] = {"params": params, "curve": [float(score) for score in match.group(2).split()]}
    return list(found.values())


def replay(recorded: list[dict[str, Any]], config: Any, trials: int, target: float) -> int:
    """Trial-epochs until a completed trial reaches `target` (all spent when none does in `trials`)."""
    import numpy as np
    import optuna

    from tasks.config.train import TrainConfig
    from tasks.sweep.search import study_pruner, study_sampler, suggest

    points = np.array([point(entry["params"]) for entry in recorded])
    study = optuna.create_study(
        direction="maximize", sampler=study_sampler(config), pruner=study_pruner(config, VALIDATION_ROWS)
    )
    used = 0
    for _ in range(trials):
        trial = study.ask()
        params = suggest(trial, config, TrainConfig(max_length=32))
        curve = recorded[int((((points - point(params)) * WEIGHTS) ** 2).sum(axis=1).argmin())]["curve"]
        for epoch, score in enumerate(curve, start=1):
            used += 1
            trial.report(score, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, max(curve))
            if max(curve) >= target:
                return used
    return used


def point(params: dict[str, float]) -> tuple[float, float, float]:
    return (math.log10(params["learning_rate"]), params["warmup_epochs"], params["weight_decay"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=540, help="Sampler seeds (0..N-1).")
    parser.add_argument("--trials", type=int, default=40, help="Trial budget per seed.")
    parser.add_argument("--target", type=float, default=0.95, help="Validation macro F1 to reach.")
    parser.add_argument("--sampler", choices=["tpe", "gp"], default="tpe", help="The searching arm's sampler.")
    parser.add_argument("--pruner", default="auto", help="The searching arm's pruner (sweep.pruner).")
    parser.add_argument("--startup-trials", type=int, help="Start-up trials (default: the sweep's).")
    parser.add_argument(
        "--random-start",
        action="store_true",
        help="Random start-up trials (tuneloop before its space-filling design) instead of the design.",
    )
    parser.add_argument("--from-logs", nargs="+", type=Path, help="Rebuild the curves from these stderr logs.")
    parser.add_argument(
        "--listed", type=int, default=9, help="Seeds 0..N-1 listed one by one, as the real benchmark's --seeds N."
    )
    args = parser.parse_args()
    import numpy as np
    import optuna

    from tasks.config.sweep import SweepConfig
    from tasks.sweep import search

    if args.random_start:
        search.space_filling_start = lambda then, seed, startup: then  # TPE's own random start-up
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.from_logs:
        CURVES.parent.mkdir(exist_ok=True)
        CURVES.write_text(json.dumps(read_logs(args.from_logs), indent=0) + "\n")
    recorded = json.loads(CURVES.read_text())
    changes = {"startup_trials": args.startup_trials} if args.startup_trials else {}
    arms = {
        f"{args.sampler} + {args.pruner} pruning": {"sampler": args.sampler, "pruner": args.pruner, **changes},
        "random, no pruning": {"sampler": "random", "pruner": "none"},
    }
    spent: dict[str, list[int]] = {}
    for arm, settings in arms.items():
        spent[arm] = []
        for seed in range(args.seeds):
            config = SweepConfig.model_validate({"seed": seed, "target_f1": args.target, **settings})
            spent[arm].append(replay(recorded, config, args.trials, args.target))
    searching, random = (np.array(spent[arm]) for arm in arms)
    example = SweepConfig.model_validate(next(iter(arms.values())))
    print(
        f"{len(recorded)} recorded curves; {args.seeds} seeds; target {args.target}; budget {args.trials} trials; "
        f"start-up trials {example.startup_trials} ({'random' if args.random_start else 'space-filling design'})"
    )
    listed = max(1, min(args.listed, args.seeds))
    print(f"| arm | mean trial-epochs to target | 90th percentile | seeds 0-{listed - 1} |")
    print("|---|---|---|---|")
    for arm, values in zip(arms, (searching, random), strict=True):
        shown = " ".join(map(str, values[:listed]))
        print(f"| {arm} | {values.mean():.1f} | {np.percentile(values, 90):.0f} | {shown} |")
    groups = [searching[i : i + 3].sum() / random[i : i + 3].sum() for i in range(0, args.seeds - 2, 3)]
    first, above = searching[:listed].sum() / random[:listed].sum(), np.mean(np.array(groups) > 0.6)
    print(
        f"searching / random: {searching.sum() / random.sum():.3f} over all seeds, "
        f"{first:.2f} over seeds 0-{listed - 1}; "
        f"a 3-seed measurement is above 0.6 in {above:.0%} of the {len(groups)} groups of 3 seeds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
