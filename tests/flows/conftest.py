"""One Prefect test server for the whole session (it takes 15 s to start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


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
