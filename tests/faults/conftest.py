"""The fault suite runs its commands against the session's Prefect test server (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_server: str) -> str:
    return prefect_server
