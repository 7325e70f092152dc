"""How a local round's trial processes share the machine's cores."""

from __future__ import annotations

import os

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
