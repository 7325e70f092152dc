"""Progress within an epoch: a bar (steps, rate, time left) on a terminal, a plain line every
PROGRESS_SECONDS otherwise (a worker's log), and the share of all planned steps reported to a
callback (the train task turns it into a Prefect progress artifact)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from tasks.model.plan import TrainingPlan

PROGRESS_SECONDS = 30.0


def progress_line(epoch: int, epochs: int, done: int, total: int, seconds: float) -> str:
    """`epoch 2/7: step 120/400 (30%), 3.1 steps/s, about 90 s left in the epoch`."""
    rate = done / seconds if seconds > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    return (
        f"epoch {epoch}/{epochs}: step {done}/{total} ({done / max(total, 1):.0%}), {rate:.1f} steps/s, "
        f"about {left:.0f} s left in the epoch"
    )


def step_progress(
    plan: TrainingPlan, log: Any, report: Callable[[float], None] | None = None, terminal: bool | None = None
) -> Any:
    """A Trainer callback showing progress inside each epoch (see the module docstring)."""
    from transformers import TrainerCallback

    on_terminal = sys.stderr.isatty() if terminal is None else terminal
    total_steps = plan.epochs * plan.steps_per_epoch

    class StepProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None
            self.first_step, self.started, self.shown = 0, time.perf_counter(), time.perf_counter()
            self.epoch = 0

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.epoch = int(state.epoch or 0) + 1
            self.first_step, self.started = state.global_step, time.perf_counter()
            self.shown = self.started
            if on_terminal:
                from tqdm.auto import tqdm

                self.bar = tqdm(
                    total=plan.steps_per_epoch, desc=f"epoch {self.epoch}/{plan.epochs}", unit="step", leave=False
                )

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(1)
            now = time.perf_counter()
            if now - self.shown < PROGRESS_SECONDS:
                return
            self.shown = now
            if self.bar is None:
                done = state.global_step - self.first_step
                log.info(progress_line(self.epoch, plan.epochs, done, plan.steps_per_epoch, now - self.started))
            if report:
                report(min(100.0, 100.0 * state.global_step / max(total_steps, 1)))

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if report:
                report(min(100.0, 100.0 * state.global_step / max(total_steps, 1)))

    return StepProgress()
