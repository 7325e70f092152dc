"""The flow tests: all on the session's Prefect test server, with shrunk configs of the tiny BERT."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tasks.config.pipeline import PipelineConfig, SweepPipelineConfig
from tests.helpers import configs, hold_a_gpu


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_server: str) -> str:
    """Every flow test talks to the session's Prefect test server (tests/conftest.py)."""
    return prefect_server


@pytest.fixture(scope="session")
def tiny_config(tiny_bert: Path) -> Callable[..., PipelineConfig]:
    """`tiny_config("train.epochs=1", ...)`: the sample's training config for the tiny BERT, overridden."""
    return partial(configs.tiny_config, tiny_bert)


@pytest.fixture(scope="session")
def sweep_config(tiny_bert: Path) -> Callable[..., SweepPipelineConfig]:
    """`sweep_config("sweep.target_f1=1.0", ...)`: a small sweep of the tiny BERT on the sample, overridden."""
    return partial(configs.sweep_config, tiny_bert)


@pytest.fixture
def first_gpu_held(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A host with two GPUs (named by CUDA_VISIBLE_DEVICES; no GPU needed) whose first another
    training holds for the test; this process has taken none yet."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("TUNELOOP_GPU_LOCKS", str(tmp_path / "locks"))
    other, its_gpu = hold_a_gpu("0,1")
    try:
        assert its_gpu == "0"
        yield
    finally:
        other.kill()
