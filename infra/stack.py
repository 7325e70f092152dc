"""The real service stack on one machine, without Docker: `make up`, `make down`, `make status`,
`make deploy`, `make mlflow-ui`.

`up` starts, on loopback, a Prefect server (SQLite, or Postgres when TUNELOOP_DB_URL is set), an
MLflow tracking server with a local artifact root, and one process worker per work pool (`cpu`,
`gpu`); it waits until each answers a health check, records their process ids in
`<TUNELOOP_HOME>/stack/stack.json` and prints the URLs. `down` stops exactly those processes (and
the flow runs their workers started). `deploy` registers `deployments/prefect.yaml`.

Settings (environment): TUNELOOP_HOME (default ./.tuneloop), TUNELOOP_PREFECT_PORT (4200),
TUNELOOP_MLFLOW_PORT (5000), TUNELOOP_DB_URL (a Postgres server, e.g.
postgresql://user:password@127.0.0.1:5432; databases `tuneloop_prefect` and `tuneloop_mlflow` are
created on it when missing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import typer

from tasks.core.stack import process_alive as alive  # the CLI asks the same question
from tasks.core.stack import running_stack

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOLS = ("cpu", "gpu")
WORKER_POLL_SECONDS = "2"
QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "False",
}

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])


class StackError(Exception):
    """A problem the user can fix, said in one line."""


def home() -> Path:
    return Path(os.environ.get("TUNELOOP_HOME", ROOT / ".tuneloop")).resolve()


def stack_folder() -> Path:
    return home() / "stack"


def record_path() -> Path:
    return stack_folder() / "stack.json"


def read_record() -> dict[str, Any] | None:
    path = record_path()
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def cpu_workers() -> int:
    """How many cpu workers `up` starts (TUNELOOP_CPU_WORKERS, default 1): sweep trials on the cpu
    pool run on whichever is free."""
    text = os.environ.get("TUNELOOP_CPU_WORKERS", "1")
    if not text.isdigit() or not 1 <= int(text) <= 32:
        raise StackError(f"TUNELOOP_CPU_WORKERS={text!r} is not a worker count: set it to 1..32 (default 1).")
    return int(text)


def workers() -> list[tuple[str, str]]:
    """(pool, worker name) of every worker `up` starts: TUNELOOP_CPU_WORKERS on cpu, one on gpu."""
    counts = {"cpu": cpu_workers(), "gpu": 1}
    return [(pool, f"{pool}-{n}" if n > 1 else pool) for pool in POOLS for n in range(1, counts[pool] + 1)]


def port(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"{name}={text!r} is not a port number: set it to a free port such as {default}.")
    return int(text)


def free(port_number: int) -> bool:
    """Whether a server could listen on the loopback port (any owner's listener counts)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port_number))
        except OSError:
            return False
    return True


def database_urls(server_url: str | None, folder: Path) -> tuple[str, str]:
    """Prefect's and MLflow's database URLs: SQLite files in the stack folder, or two databases on
    the Postgres server TUNELOOP_DB_URL names (created when missing)."""
    if not server_url:
        return f"sqlite+aiosqlite:///{folder / 'prefect.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    parts = urlsplit(server_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise StackError(
            f"TUNELOOP_DB_URL={server_url!r} is not a Postgres URL: write postgresql://user:password@host:5432."
        )
    if importlib.util.find_spec("psycopg2") is None:
        raise StackError(
            "TUNELOOP_DB_URL is set but MLflow's Postgres driver is missing: run pip install -e '.[postgres]'."
        )
    create_databases(server_url, ["tuneloop_prefect", "tuneloop_mlflow"])
    base = parts._replace(scheme="postgresql", path="")
    prefect = urlunsplit(base._replace(scheme="postgresql+asyncpg", path="/tuneloop_prefect"))
    return prefect, urlunsplit(base._replace(path="/tuneloop_mlflow"))


def create_databases(server_url: str, names: list[str]) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        parts = urlsplit(server_url)
        connection = await asyncpg.connect(urlunsplit(parts._replace(scheme="postgresql", path="/postgres")))
        try:
            existing = {row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as error:
        raise StackError(f"Cannot reach Postgres at TUNELOOP_DB_URL ({error}): start it or fix the URL.") from None


def start(name: str, command: list[str], env: dict[str, str], folder: Path) -> dict[str, Any]:
    """Start one service in its own session, output to `<name>.log`; return its record."""
    log = folder / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    return {
        "name": name,
        "pid": process.pid,
        "started": psutil.Process(process.pid).create_time(),
        "log": str(log),
        "command": command,
    }


def wait_until(name: str, check: Callable[[], bool], record: dict[str, Any], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(record):
            tail = Path(record["log"]).read_text(errors="replace")[-1500:]
            raise StackError(f"{name} exited while starting; the end of {record['log']}:\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise StackError(f"{name} did not answer its health check within {seconds:.0f} s; see {record['log']}.")


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=3).status_code == 200


def worker_online(api_url: str, pool: str, worker: str) -> Callable[[], bool]:
    def check() -> bool:
        response = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={}, timeout=3)
        return response.status_code == 200 and any(
            item["name"] == worker and item.get("status") == "ONLINE" for item in response.json()
        )

    return check


def stop(record: dict[str, Any], grace: float = 20) -> None:
    """Stop a recorded process and everything it started (a worker's flow runs)."""
    if not alive(record):
        return
    parent = psutil.Process(record["pid"])
    family = [*parent.children(recursive=True), parent]
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, left = psutil.wait_procs(family, timeout=grace)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(left, timeout=5)


def service_env(prefect_url: str, mlflow_url: str) -> dict[str, str]:
    """What every process of the stack (and the flow runs workers start) sees."""
    tuneloop_home = home()
    return {
        **os.environ,
        **QUIET,
        "PREFECT_API_URL": prefect_url,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "TUNELOOP_HOME": str(tuneloop_home),
        "TUNELOOP_ROOT": str(ROOT),
        "PREFECT_LOGGING_EXTRA_LOGGERS": "transformers",
        "PREFECT_LOCAL_STORAGE_PATH": str(tuneloop_home / "prefect-storage"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        # Workers ask for flow runs every WORKER_POLL_SECONDS (Prefect's default, 10 s, would delay a
        # UI run's start, and start a round's trial flow runs up to a poll apart); the user's own wins.
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", WORKER_POLL_SECONDS),
    }


def bring_up() -> dict[str, Any]:
    record = read_record()
    if record and any(alive(process) for process in record["processes"]):
        raise StackError("The stack already runs (see `make status`); stop it with `make down` first.")
    prefect_port, mlflow_port = port("TUNELOOP_PREFECT_PORT", 4200), port("TUNELOOP_MLFLOW_PORT", 5000)
    planned = workers()  # a bad TUNELOOP_CPU_WORKERS fails before anything starts
    for name, number in (("TUNELOOP_PREFECT_PORT", prefect_port), ("TUNELOOP_MLFLOW_PORT", mlflow_port)):
        if not free(number):
            raise StackError(f"Port {number} is taken: stop what listens there or set {name} to a free port.")
    folder = stack_folder()
    folder.mkdir(parents=True, exist_ok=True)
    prefect_db, mlflow_db = database_urls(os.environ.get("TUNELOOP_DB_URL"), folder)
    prefect_url, mlflow_url = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
    env = service_env(prefect_url, mlflow_url)
    record = {"prefect_api_url": prefect_url, "prefect_ui_url": prefect_url[: -len("/api")], "mlflow_url": mlflow_url}
    record["processes"] = processes = []

    def save() -> None:  # process ids and URLs; readable by its owner only
        path = record_path()
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(json.dumps(record, indent=2), encoding="utf-8")

    try:
        server_env = {
            **env,
            "PREFECT_HOME": str(folder / "prefect-home"),
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
            "PREFECT_UI_API_URL": prefect_url,
        }
        server = start(
            "prefect-server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            server_env,
            folder,
        )
        mlflow = start(
            "mlflow-server",
            [
                *(str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)),
                *("--artifacts-destination", str(folder / "mlflow-artifacts"), "--workers", "1"),
            ],
            # The database URL in the environment: a password stays out of `ps`. The server's job
            # execution (GenAI scorers and evaluation jobs, unused by tuneloop) would start a job
            # runner and several huey consumers: about 1 GB and half a minute of CPU; off unless set.
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env, "MLFLOW_BACKEND_STORE_URI": mlflow_db},
            folder,
        )
        processes += [server, mlflow]
        save()
        wait_until("The Prefect server", http_ok(f"{prefect_url}/health"), server)
        wait_until("The MLflow server", http_ok(f"{mlflow_url}/health"), mlflow)
        for pool, label in planned:
            name = f"tuneloop-{label}"
            command = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name]
            worker = start(f"worker-{label}", command, env, folder)
            processes.append(worker)
            save()
            wait_until(f"The {pool} worker", worker_online(prefect_url, pool, name), worker)
    except BaseException:
        for process in reversed(processes):
            stop(process)
        record_path().unlink(missing_ok=True)
        raise
    return record


@app.command()
def up() -> None:
    """Start the Prefect server, the MLflow server and one worker per pool, and wait until they answer."""
    record = bring_up()
    typer.echo(f"Prefect UI   {record['prefect_ui_url']}")
    typer.echo(f"Prefect API  {record['prefect_api_url']}")
    typer.echo(f"MLflow       {record['mlflow_url']}")
    names = ", ".join(process["name"].removeprefix("worker-") for process in record["processes"][2:])
    typer.echo(f"Workers      {names} (logs in {stack_folder()})")
    typer.echo("Point your shell at them:  eval $(make -s env)")


@app.command()
def down() -> None:
    """Stop exactly the processes `up` started (by their recorded ids), workers first."""
    record = read_record()
    if not record:
        typer.echo("Nothing to stop: no stack record in " + str(record_path()))
        return
    for process in reversed(record["processes"]):
        running = alive(process)
        stop(process)
        typer.echo(f"{process['name']:<15} {'stopped' if running else 'was not running'} (pid {process['pid']})")
    record_path().unlink()


@app.command()
def status() -> None:
    """Show each recorded process and whether it runs."""
    record = read_record()
    if not record:
        typer.echo("The stack is not running (start it with `make up`).")
        raise typer.Exit(1)
    typer.echo(f"Prefect UI {record['prefect_ui_url']}   MLflow {record['mlflow_url']}")
    states = [(process["name"], process["pid"], alive(process)) for process in record["processes"]]
    for name, pid, running in states:
        typer.echo(f"  {name:<15} pid {pid:<8} {'running' if running else 'STOPPED'}")
    if not all(running for *_, running in states):
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export` lines that point a shell (and the tuneloop CLI) at the running stack."""
    record = read_record()
    if not record:
        raise StackError("The stack is not running: start it with `make up`.")
    typer.echo(f"export PREFECT_API_URL={record['prefect_api_url']}")
    typer.echo(f"export MLFLOW_TRACKING_URI={record['mlflow_url']}")


@app.command("mlflow-ui")
def mlflow_ui() -> None:
    """Open MLflow's UI on the store in use: the running stack's server (already serving: its URL is
    printed), MLFLOW_TRACKING_URI's server, or the home folder's SQLite store (served on port 5000)."""
    record = running_stack()
    if record:
        typer.echo(f"The local stack's MLflow server serves its UI: {record['mlflow_url']}")
        return
    configured = os.environ.get("MLFLOW_TRACKING_URI", "")
    if configured.startswith(("http://", "https://")):
        typer.echo(f"MLFLOW_TRACKING_URI is a tracking server; its UI: {configured}")
        return
    store = configured or f"sqlite:///{home() / 'mlflow.db'}"
    typer.echo(f"MLflow UI on {store}: http://127.0.0.1:5000 (Ctrl-C stops it)")
    command = [str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", "5000"]
    os.execve(command[0], command, {**os.environ, **QUIET})


@app.command()
def deploy() -> None:
    """Register the deployments of deployments/prefect.yaml (work pools and the `gpu` concurrency
    limit are created when missing) with the Prefect server at PREFECT_API_URL, or the stack's."""
    record = read_record()
    api_url = os.environ.get("PREFECT_API_URL") or (record or {}).get("prefect_api_url")
    if not api_url:
        raise StackError("No Prefect server: start one with `make up`, or set PREFECT_API_URL.")
    try:
        httpx.get(f"{api_url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError:
        raise StackError(f"The Prefect server at {api_url} does not answer: start it with `make up`.") from None
    ensure_pools_and_limits(api_url)
    # The deployments' pull step changes into TUNELOOP_ROOT: this checkout, unless the workers see
    # the project elsewhere (the worker image: TUNELOOP_ROOT=/opt/tuneloop make deploy).
    env = {**os.environ, **QUIET, "PREFECT_API_URL": api_url}
    env.setdefault("TUNELOOP_ROOT", str(ROOT))
    command = [str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"prefect deploy failed:\n{(done.stdout + done.stderr)[-3000:]}")
    typer.echo(f"Deployments registered with {api_url}:")
    typer.echo(
        subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True).stdout
    )


def ensure_pools_and_limits(api_url: str) -> None:
    """Process work pools `cpu` and `gpu`, and the strict global concurrency limit `gpu` (one trial
    per GPU) that the gpu deployments' sweeps occupy."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with httpx.Client(base_url=api_url, timeout=10) as client:
        for pool in POOLS:
            if client.get(f"/work_pools/{pool}").status_code == 404:
                body = {"name": pool, "type": "process", "base_job_template": template}
                body["description"] = f"tuneloop {pool} workers (one process per flow run)"
                client.post("/work_pools/", json=body).raise_for_status()
        if client.get("/v2/concurrency_limits/gpu").status_code == 404:
            client.post("/v2/concurrency_limits/", json={"name": "gpu", "limit": 1}).raise_for_status()


def main() -> None:
    try:
        app()
    except StackError as error:
        typer.echo(f"Error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
