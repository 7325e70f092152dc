"""How fast the command line answers simple things, as a user types them (each its own process):
a wrong column (answered from the file's header, before any server starts), and `tuneloop predict`
of one text with a saved baseline and with a fine-tuned model (no Prefect server either way).

Run: `python benchmarks/answers.py [--model .tuneloop/runs/<run>/model] [--repeats 3]`; without
--model, the newest run folder's model and baseline under TUNELOOP_HOME (run `make run` first).
Prints a table of the median seconds (a warm machine: the first repeat pays the disk cache).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasks.core.home import tuneloop_home

TUNELOOP = str(Path(sys.executable).with_name("tuneloop"))


def seconds(command: list[str], expect: int) -> float:
    """Wall time of one command, checked to exit with `expect`."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-500:]}")
    return took


def newest_run() -> Path:
    runs = sorted((tuneloop_home() / "runs").glob("*-train-*/model"))
    if not runs:
        raise SystemExit("No run folder with a model under the home folder: run `make run` first, or pass --model.")
    return runs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="A run's model folder (its baseline is beside it).")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    model = arguments.model or newest_run()
    baseline = model.parent / "baseline" / "model"
    wrong = Path(tempfile.mkdtemp()) / "wrong.csv"
    wrong.write_text("question,intent\nhello there,greet\nbye now,leave\n", encoding="utf-8")
    cases = [
        ("wrong column (tuneloop run)", [TUNELOOP, "run", "--data", str(wrong), "--text-column", "question"], 2),
        ("predict 1 text, baseline", [TUNELOOP, "predict", "--model", str(baseline), "--text", "refund please"], 0),
        ("predict 1 text, fine-tune", [TUNELOOP, "predict", "--model", str(model), "--text", "refund please"], 0),
    ]
    print(f"| command | median s ({arguments.repeats} runs) | runs |")
    print("|---|---|---|")
    for name, command, expect in cases:
        if name.endswith("baseline") and not baseline.is_dir():
            print(f"| {name} | - | no baseline beside {model} |")
            continue
        times = [seconds(command, expect) for _ in range(arguments.repeats)]
        print(f"| {name} | {statistics.median(times):.1f} | {', '.join(f'{t:.1f}' for t in times)} |")


if __name__ == "__main__":
    main()
