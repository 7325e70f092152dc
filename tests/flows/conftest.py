"""One Prefect test server for the whole session (it takes 15 s to start)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tasks.config.pipeline import PipelineConfig, SweepPipelineConfig
from tests.helpers import configs


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect API for every flow test; yields its URL. Task results go to a temp folder."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Bind Prefect's console handler to the session's stderr now, not to the stream of whichever
    # CliRunner call happens to run the first flow (that stream is closed after the call).
    ensure_logging_setup()
    storage: Path = tmp_path_factory.mktemp("prefect-results")
    with prefect_test_harness(server_startup_timeout=120), temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def tiny_config(tiny_bert: Path) -> Callable[..., PipelineConfig]:
    """`tiny_config("train.epochs=1", ...)`: the sample's training config for the tiny BERT, overridden."""
    return partial(configs.tiny_config, tiny_bert)


@pytest.fixture(scope="session")
def sweep_config(tiny_bert: Path) -> Callable[..., SweepPipelineConfig]:
    """`sweep_config("sweep.target_f1=1.0", ...)`: a small sweep of the tiny BERT on the sample, overridden."""
    return partial(configs.sweep_config, tiny_bert)
