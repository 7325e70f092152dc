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
