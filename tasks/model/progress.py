"""Training as it happens: progress within an epoch (a bar with steps, rate and time left on a
terminal, a plain line every PROGRESS_SECONDS otherwise, and the share of all planned steps for a
Prefect progress artifact), and the loss and each epoch's metrics streamed to a live tracking run."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.model.plan import TrainingPlan, epoch_losses, eval_scores

PROGRESS_SECONDS = 30.0


def progress_line(epoch: int, epochs: int, done: int, total: int, seconds: float, phase: str = "epoch") -> str:
    """`epoch 2/7: step 120/400 (30%), 3.1 steps/s, about 90 s left in the epoch` (`refit epoch ...`
    for phase="refit epoch")."""
    rate = done / seconds if seconds > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    return (
        f"{phase} {epoch}/{epochs}: step {done}/{total} ({done / max(total, 1):.0%}), {rate:.1f} steps/s, "
        f"about {left:.0f} s left in the epoch"
    )


def step_progress(
    plan: TrainingPlan,
    log: Any,
    report: Callable[[float], None] | None = None,
    terminal: bool | None = None,
    phase: str = "epoch",
) -> Any:
    """A Trainer callback showing progress inside each epoch (see the module docstring); `phase`
    names the epochs (`refit epoch` for a refit's)."""
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
                    total=plan.steps_per_epoch, desc=f"{phase} {self.epoch}/{plan.epochs}", unit="step", leave=False
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
                log.info(progress_line(self.epoch, plan.epochs, done, plan.steps_per_epoch, now - self.started, phase))
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
FLUSH_SECONDS = 10.0
Row = tuple[str, float, int, int]  # key, value, step, timestamp (ms): a resent row is the same row


class MetricQueue:
    """Metrics on their way to the tracking server, sent by a background thread so training never
    waits for the network: every FLUSH_SECONDS, or at once when `flush_soon` is called. A send that
    fails keeps its rows for the next (rows carry their timestamp, so a send that reached the server
    and is repeated stores nothing twice)."""

    def __init__(self, send: Callable[[list[Row]], None], log: Any) -> None:
        import threading

        self.send, self.log = send, log
        self.rows: list[Row] = []
        self.lock, self.wake, self.stopped = threading.Lock(), threading.Event(), threading.Event()
        self.warned = False
        self.sent, self.busy_seconds = 0, 0.0
        self.thread = threading.Thread(target=self.loop, name="tuneloop-metrics", daemon=True)
        self.thread.start()

    def add(self, key: str, value: float, step: int) -> None:
        with self.lock:
            self.rows.append((key, float(value), int(step), int(time.time() * 1000)))

    def flush_soon(self) -> None:
        self.wake.set()

    def flush(self) -> bool:
        """Send what is queued now; False when the server did not take it."""
        with self.lock:
            batch = list(self.rows)
        if not batch:
            return True
        began = time.perf_counter()
        try:
            for start in range(0, len(batch), 1000):  # MLflow's log_batch takes up to 1000 metrics
                self.send(batch[start : start + 1000])
        except Exception as error:  # kept, and sent with the next flush
            if not self.warned:
                self.log.warning("MLflow did not take the training's metrics (%s); keeping them", str(error)[:200])
                self.warned = True
            return False
        finally:
            self.busy_seconds += time.perf_counter() - began
        with self.lock:
            del self.rows[: len(batch)]
        if self.warned:
            self.log.info("MLflow is back: %d kept metrics sent", len(batch))
        self.sent, self.warned = self.sent + len(batch), False
        return True

    def loop(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(FLUSH_SECONDS)
            self.wake.clear()
            if not self.stopped.is_set():
                self.flush()

    def close(self, grace_seconds: float) -> list[Row]:
        """Stop the thread, then keep trying for `grace_seconds`; the rows still unsent (a send still
        hanging in the thread after that may yet arrive: the run's final logging resends its rows
        with the same timestamps, which the server stores once)."""
        deadline = time.monotonic() + grace_seconds
        self.stopped.set()
        self.wake.set()
        self.thread.join(timeout=max(grace_seconds, 1.0))
        if not self.thread.is_alive():
            while not self.flush() and time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        with self.lock:
            return list(self.rows)


def metric_stream(
    send: Callable[[list[Row]], None],
    log: Any,
    folder: Path,
    grace_seconds: float,
    loss_every: int = 50,
    phase: str = "train",
) -> Any:
    """A Trainer callback that streams the training to a live run: `<phase>/loss` (step = optimizer
    step) every `loss_every` steps and at each epoch's end, `train/epoch_loss` and `val/*` (step =
    epoch) as each epoch is evaluated, sent in the background (MetricQueue); a refit (`phase`
    "refit") evaluates nothing and streams `refit/loss`. At the end of training it retries for
    `grace_seconds`, then adds what is still unsent to `folder/pending_metrics.json` for the run's
    final logging: no metric is lost."""
    from transformers import TrainerCallback

    class MetricStream(TrainerCallback):
        def __init__(self) -> None:
            self.queue: MetricQueue | None = None
            self.started, self.waited = time.perf_counter(), 0.0  # waited: the training's own share

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.queue, self.started = MetricQueue(send, log), time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % loss_every == 0:
                control.should_log = True  # the Trainer logs the loss since its last log

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if self.queue and logs and "loss" in logs:
                began = time.perf_counter()
                self.queue.add(f"{phase}/loss", float(logs["loss"]), state.global_step)
                self.waited += time.perf_counter() - began

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            if self.queue is None:
                return
            began, epoch = time.perf_counter(), round(state.epoch or 0)
            loss = epoch_losses(state.log_history).get(epoch)
            if loss is not None:
                self.queue.add("train/epoch_loss", loss, epoch)
            for name, value in eval_scores(metrics or {}).items():
                self.queue.add(f"val/{name}", value, epoch)
            self.queue.flush_soon()
            self.waited += time.perf_counter() - began

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.queue is None:
                return
            unsent = self.queue.close(grace_seconds)
            if unsent:
                pending = folder / PENDING_METRICS  # the first fit's, when this is the refit
                kept = json.loads(pending.read_text(encoding="utf-8")) if pending.is_file() else []
                pending.write_text(json.dumps([*kept, *unsent]), encoding="utf-8")
                log.warning("MLflow still unreachable: %d metrics kept in %s", len(unsent), folder)
            share = self.waited / max(time.perf_counter() - self.started, 1e-9)
            log.info(
                "Live MLflow logging: %d metrics sent in %.2f s by a background thread; the training "
                "spent %.3f s (%.3f%%) on it",
                self.queue.sent,
                self.queue.busy_seconds,
                self.waited,
                100 * share,
            )

    return MetricStream()
