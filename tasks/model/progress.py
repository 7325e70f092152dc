"""Training as it happens: progress within an epoch (a bar with steps, rate and time left on a
terminal, a plain line every PROGRESS_SECONDS otherwise, and the share of all planned steps for a
Prefect progress artifact), and each epoch's metrics streamed to a live tracking run."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.model.plan import TrainingPlan, eval_scores

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


PENDING_METRICS = "pending_metrics.json"


def metric_stream(
    send: Callable[[list[tuple[str, float, int]]], None], log: Any, folder: Path, grace_seconds: float
) -> Any:
    """A Trainer callback that sends each epoch's metrics (`train/loss`, `val/*`, step = epoch) as
    soon as the epoch is evaluated. A send that fails (the tracking server is down) keeps its
    metrics for the next; at the end of training it retries for `grace_seconds`, then leaves what is
    still unsent in `folder/pending_metrics.json` for the run's final logging: no metric is lost."""
    from transformers import TrainerCallback

    class MetricStream(TrainerCallback):
        def __init__(self) -> None:
            self.pending: list[tuple[str, float, int]] = []
            self.loss: float | None = None
            self.warned = False
            self.sent, self.seconds, self.started = 0, 0.0, time.perf_counter()

        def flush(self) -> bool:
            if not self.pending:
                return True
            began = time.perf_counter()
            try:
                send(self.pending)
                self.sent += len(self.pending)
            except Exception as error:  # kept, and sent with the next epoch or at the end
                if not self.warned:
                    log.warning("MLflow did not take the epoch's metrics (%s); keeping them", str(error)[:200])
                    self.warned = True
                return False
            finally:
                self.seconds += time.perf_counter() - began
            self.pending, self.warned = [], False
            return True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            epoch = round(state.epoch or 0)
            if self.loss is not None:
                self.pending.append(("train/loss", self.loss, epoch))
            for name, value in eval_scores(metrics or {}).items():
                self.pending.append((f"val/{name}", value, epoch))
            self.flush()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            deadline = time.monotonic() + grace_seconds
            while not self.flush() and time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            if self.pending:
                (folder / PENDING_METRICS).write_text(json.dumps(self.pending), encoding="utf-8")
                log.warning("MLflow still unreachable: %d metrics kept in %s", len(self.pending), folder)
            share = self.seconds / max(time.perf_counter() - self.started, 1e-9)
            log.info(
                "Live MLflow logging: %d metrics in %.2f s (%.2f%% of training)", self.sent, self.seconds, 100 * share
            )

    return MetricStream()
