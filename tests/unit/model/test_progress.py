from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.model import progress
from tasks.model.plan import TrainingPlan

PLAN = TrainingPlan(
    epochs=2, steps_per_epoch=4, warmup_steps=1, learning_rate=1e-4, lr_scheduler="constant", patience=3, max_length=64
)


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args if args else message)

    warning = info


def test_progress_line_says_steps_rate_and_time_left() -> None:
    line = progress.progress_line(2, 7, 120, 400, 40.0)
    assert line == "epoch 2/7: step 120/400 (30%), 3.0 steps/s, about 93 s left in the epoch"
    assert progress.progress_line(1, 4, 16, 31, 8.0, "refit epoch").startswith("refit epoch 1/4: step 16/31")


def test_without_a_terminal_progress_is_plain_lines_and_a_share_of_all_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)
    log, shares = Lines(), []
    callback = progress.step_progress(PLAN, log, shares.append, terminal=False)
    callback.on_epoch_begin(None, SimpleNamespace(epoch=1.0, global_step=4), None)
    for step in (5, 6, 7, 8):
        callback.on_step_end(None, SimpleNamespace(epoch=1.5, global_step=step), None)
    callback.on_epoch_end(None, SimpleNamespace(epoch=2.0, global_step=8), None)
    assert log.lines[0].startswith("epoch 2/2: step 1/4 (25%)") and log.lines[-1].startswith("epoch 2/2: step 4/4")
    assert shares[0] == 62.5 and shares[-1] == 100.0


def test_a_tracking_outage_loses_no_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sends that fail keep their rows (with their first timestamp) for the next one; what is still
    unsent when the grace period ends is left for the run's final logging."""
    monkeypatch.setattr(progress, "FLUSH_SECONDS", 3600.0)  # this test flushes by hand
    sent: list[list[tuple[str, float, int, int]]] = []
    down = {"calls": 2}

    def send(metrics: list[tuple[str, float, int, int]]) -> None:
        if down["calls"] > 0:
            down["calls"] -= 1
            raise ConnectionError("tracking server down")
        sent.append(list(metrics))

    log = Lines()
    queue = progress.MetricQueue(send, log)
    queue.add("train/loss", 0.9, 50)
    assert not queue.flush()
    stamp = queue.rows[0][3]
    queue.add("val/f1_macro", 0.5, 1)
    later = queue.rows[1][3]
    assert not queue.flush() and queue.flush()
    assert sent == [[("train/loss", 0.9, 50, stamp), ("val/f1_macro", 0.5, 1, later)]]
    assert queue.rows == [] and queue.sent == 2
    assert log.lines[0].startswith("MLflow did not take") and len(log.lines) == 2 and "back" in log.lines[1]
    down["calls"] = 10**6  # down for good: the last rows are returned for the run folder
    queue.add("val/f1_macro", 0.6, 2)
    assert [(key, step) for key, _, step, _ in queue.close(grace_seconds=0)] == [("val/f1_macro", 2)]


def test_the_stream_logs_the_loss_every_n_steps_and_each_epoch_from_a_thread(tmp_path: Path) -> None:
    sent: list[tuple[str, float, int, int]] = []
    stream = progress.metric_stream(sent.extend, Lines(), tmp_path, grace_seconds=5, loss_every=2)
    history: list[dict[str, float]] = []
    state = SimpleNamespace(epoch=0.0, global_step=0, log_history=history)
    stream.on_train_begin(None, state, None)
    for step in (1, 2, 3, 4):
        state.global_step, state.epoch = step, step / 4
        control = SimpleNamespace(should_log=False)
        stream.on_step_end(None, state, control)
        assert control.should_log == (step % 2 == 0)
        if control.should_log:
            history.append({"loss": 1.0 / step, "step": step, "epoch": state.epoch})
            stream.on_log(None, state, control, logs=history[-1])
    history.append({"eval_loss": 0.4, "eval_f1_macro": 0.7, "step": 4, "epoch": 1.0})
    stream.on_evaluate(None, state, None, metrics=history[-1])
    stream.on_train_end(None, state, None)
    assert [(key, value, step) for key, value, step, _ in sent] == [
        ("train/loss", 0.5, 2),
        ("train/loss", 0.25, 4),
        ("train/epoch_loss", 0.375, 1),
        ("val/f1_macro", 0.7, 1),
    ]
    assert not (tmp_path / progress.PENDING_METRICS).exists()


def test_the_epoch_loss_is_the_step_weighted_mean_of_its_windows() -> None:
    from tasks.model.plan import epoch_losses

    history = [
        {"loss": 1.0, "step": 3, "epoch": 0.6},
        {"loss": 0.5, "step": 5, "epoch": 1.0},
        {"eval_loss": 0.9, "step": 5, "epoch": 1.0},
        {"loss": 0.2, "step": 10, "epoch": 2.0},
        {"eval_loss": 0.8, "step": 10, "epoch": 2.0},
    ]
    assert epoch_losses(history) == pytest.approx({1: (3 * 1.0 + 2 * 0.5) / 5, 2: 0.2})
