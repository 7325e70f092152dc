"""How a local round's trial processes share the machine's cores."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from tasks.sweep.dispatch import cores_each, share_cores


@pytest.mark.parametrize(("concurrent", "threads"), [(1, 4), (2, 2), (3, 1), (8, 1)])
def test_trials_at_once_split_the_cores_between_them(
    monkeypatch: pytest.MonkeyPatch, concurrent: int, threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert cores_each(concurrent) == threads


def test_a_trial_process_computes_on_its_share_unless_omp_num_threads_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", str(before))
        share_cores(before + 1)
        assert torch.get_num_threads() == before, "the user's OMP_NUM_THREADS wins"
        monkeypatch.delenv("OMP_NUM_THREADS")
        share_cores(before + 1)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def deaf_to_sigterm(ready: Any) -> None:
    """A trial process stuck where no Python runs its SIGTERM handler (here: one that ignores it)."""
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(120)


def test_a_trial_process_that_does_not_end_when_told_is_killed_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped or broken pool's processes get STOP_GRACE_SECONDS after SIGTERM; one still running
    then is killed, or the pool's shutdown (and the command) would wait for it for good."""
    import multiprocessing
    import signal
    import time
    from types import SimpleNamespace

    from tasks.sweep import dispatch

    context = multiprocessing.get_context("fork")
    ready = context.Event()
    stuck = context.Process(target=deaf_to_sigterm, args=(ready,), daemon=True)
    stuck.start()
    assert ready.wait(30)
    stuck.terminate()
    monkeypatch.setattr(dispatch, "STOP_GRACE_SECONDS", 1.0)
    started = time.monotonic()
    dispatch.end_processes(SimpleNamespace(_executor=SimpleNamespace(_processes={stuck.pid: stuck})))
    stuck.join(10)
    assert stuck.exitcode == -signal.SIGKILL and time.monotonic() - started < 10
