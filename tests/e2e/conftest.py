"""The real service stack for end-to-end tests: `infra/stack.py up` (Prefect server with its UI,
MLflow server, cpu and gpu process workers) on free loopback ports in a temp home, `deploy` of
deployments/prefect.yaml, and `down` at the end, which must leave none of its processes running.
On SQLite by default; on a throwaway PostgreSQL server for the Postgres test."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.helpers.stack import postgres_bin, running_stack


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the group (this file may load first)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (make test runs several workers) every end-to-end test of the session's
    stack runs on one worker, so that stack is started once; the Postgres test starts a stack of its
    own and may run beside them."""
    for item in items:
        if "tests/e2e/" in item.nodeid:
            group = "postgres-stack" if "test_stack_postgres" in item.nodeid else "stack"
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def e2e_tests_on_one_worker(request: pytest.FixtureRequest) -> None:
    """Fail the end-to-end tests at once when the grouping did not take (pytest 9.2 ignores the group
    that pytest-xdist 3.8 writes into test ids): each worker would start a stack of its own."""
    if not getattr(request.config.option, "loadgroup", False):
        return
    items = request.session.items
    ungrouped = [item.nodeid for item in items if "tests/e2e/" in item.nodeid and "@" not in item.nodeid]
    if ungrouped:
        pytest.fail(
            f"pytest-xdist did not put the end-to-end tests on one worker ({ungrouped[0]}): these versions of "
            "pytest and pytest-xdist do not work together; install the ones pyproject.toml pins (make install).",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The default stack (SQLite, two cpu workers) with the deployments registered: its URLs, home
    folder and environment."""
    with running_stack(tmp_path_factory.mktemp("stack-home"), TUNELOOP_CPU_WORKERS="2") as running:
        yield running


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port, trust auth, user `tuneloop`; stopped
    and deleted at the end. Root runs it as the `postgres` user (initdb refuses root)."""
    programs = postgres_bin()
    if programs is None:
        pytest.skip("PostgreSQL server not installed: run make system-deps (Debian package postgresql)")
    data = Path(tempfile.mkdtemp(prefix="tuneloop-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def pg(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    try:
        pg(str(programs / "initdb"), "-D", str(data / "db"), "-U", "tuneloop", "--auth=trust", "--no-sync")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg(str(programs / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start")
        try:
            yield f"postgresql://tuneloop@127.0.0.1:{port}"
        finally:
            pg(str(programs / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)
