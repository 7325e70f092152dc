import json
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


def test_a_tracking_outage_loses_no_metric(tmp_path: Path) -> None:
    """Sends that fail keep their metrics for the next one; what is still unsent when the grace
    period ends is left for the run's final logging."""
    sent: list[list[tuple[str, float, int]]] = []
    down = {"calls": 2}

    def send(metrics: list[tuple[str, float, int]]) -> None:
        if down["calls"] > 0:
            down["calls"] -= 1
            raise ConnectionError("tracking server down")
        sent.append(list(metrics))

    stream = progress.metric_stream(send, Lines(), tmp_path, grace_seconds=0)
    for epoch in (1, 2, 3):
        stream.on_log(None, SimpleNamespace(epoch=epoch), None, logs={"loss": 1.0 / epoch})
        stream.on_evaluate(None, SimpleNamespace(epoch=float(epoch)), None, metrics={"eval_f1_macro": epoch / 10})
    assert len(sent) == 1 and [(key, step) for key, _, step in sent[0]] == [
        ("train/loss", 1),
        ("val/f1_macro", 1),
        ("train/loss", 2),
        ("val/f1_macro", 2),
        ("train/loss", 3),
        ("val/f1_macro", 3),
    ]
    down["calls"] = 10**6  # down for good: the last epoch's metrics wait in the run folder
    stream.on_log(None, SimpleNamespace(epoch=4), None, logs={"loss": 0.2})
    stream.on_evaluate(None, SimpleNamespace(epoch=4.0), None, metrics={"eval_f1_macro": 0.5})
    stream.on_train_end(None, SimpleNamespace(epoch=4.0), None)
    pending = json.loads((tmp_path / progress.PENDING_METRICS).read_text())
    assert [(key, step) for key, _, step in pending] == [("train/loss", 4), ("val/f1_macro", 4)]
