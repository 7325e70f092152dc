"""`make up` with TUNELOOP_DB_URL: the Prefect server and the MLflow server keep their state in a
real PostgreSQL server (started by the test), and a deployment run lands there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.stack import prefect_client, run_train_deployment, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def postgres_stack(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_stack(tmp_path_factory.mktemp("pg-stack-home"), TUNELOOP_DB_URL=postgres_url) as running:
        yield running


def test_stack_on_postgres_keeps_prefect_and_mlflow_state_there(
    postgres_url: str, postgres_stack: dict[str, Any], tiny_bert: Path
) -> None:
    import psycopg2

    assert not list((postgres_stack["home"] / "stack").glob("*.db")), "no SQLite file when Postgres is set"
    # The database URL (and a password in it) is in the server's environment, not on its command line.
    record = (postgres_stack["home"] / "stack" / "stack.json").read_text()
    assert (
        "postgresql" not in record and (postgres_stack["home"] / "stack" / "stack.json").stat().st_mode & 0o777 == 0o600
    )
    import psutil

    [server] = [p for p in json.loads(record)["processes"] if p["name"] == "mlflow-server"]
    assert "postgresql" not in " ".join(psutil.Process(server["pid"]).cmdline())
    with prefect_client(postgres_stack) as client:
        tracked = run_train_deployment(postgres_stack, client, tiny_bert, "e2e-postgres")
        flow_run_id = tracked.data.tags["prefect.flow_run_id"]

    with psycopg2.connect(f"{postgres_url}/tuneloop_prefect") as prefect_db, prefect_db.cursor() as rows:
        rows.execute("SELECT name FROM deployment ORDER BY name")
        assert [name for (name,) in rows.fetchall()] == ["cpu", "cpu", "cpu", "daily", "gpu", "nightly", "weekly"]
        rows.execute("SELECT state_type FROM flow_run WHERE id = %s", (flow_run_id,))
        assert rows.fetchone() == ("COMPLETED",)
    with psycopg2.connect(f"{postgres_url}/tuneloop_mlflow") as mlflow_db, mlflow_db.cursor() as rows:
        query = "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'test/f1_macro'"
        rows.execute(query, (tracked.info.run_id,))
        [(value,)] = rows.fetchall()
        assert value == pytest.approx(tracked.data.metrics["test/f1_macro"])
