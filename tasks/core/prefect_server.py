"""The temporary Prefect server of a command run without PREFECT_API_URL. Prefect starts one on
first use as a child process (uvicorn) and stops it at a normal exit; killed (`kill -9`, the OOM
killer), the command would leave it running, re-parented to PID 1. The command therefore starts it
itself, from its main thread, as a child that the kernel stops when the command dies (Linux's
parent-death signal); Prefect's clients then use that server. Commands started at the same moment
on a fresh Prefect home start theirs one after another (a file lock), since their servers would
otherwise race on migrating the same database."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tasks.core.errors import TuneloopError, first_line
from tasks.core.secrets import mask_credentials

# Seconds the temporary server may take to answer, at least.
STARTUP_SECONDS = 120

# Run by the server's Python before uvicorn: ask for SIGTERM when the parent dies, and exit at once
# if it already died between the fork and this line (it would never get the signal then).
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "os.getppid() == int(sys.argv[1]) or sys.exit(0)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def server_command(port: int, parent: int) -> list[str]:
    """Prefect's own command for its temporary server (prefect/server/api/server.py), run through
    DIE_WITH_PARENT on Linux."""
    import prefect

    uvicorn = ["-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent)]
    uvicorn += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
    uvicorn += ["--log-level", "error", "--lifespan", "on"]
    if not sys.platform.startswith("linux"):
        return [sys.executable, *uvicorn]
    return [sys.executable, "-c", DIE_WITH_PARENT, str(parent), *uvicorn]


def start_temporary_server() -> str | None:
    """Start the temporary Prefect server now, tied to this process; its API URL, or None when a
    server is configured (PREFECT_API_URL: checked to answer) or one already runs. Call it from the
    main thread: the parent-death signal fires when the thread that started the child ends."""
    import subprocess

    from filelock import FileLock
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, get_current_settings

    if PREFECT_API_URL.value():
        check_configured_server(PREFECT_API_URL.value())
        return None

    class DiesWithCommand(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            environment = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            assert self.port is not None
            return subprocess.Popen(server_command(self.port, os.getpid()), env=environment)

    # Prefect keeps one server per port (None: any free port) and asks for it as SubprocessASGIServer();
    # created first, this one is the instance every Prefect client of this process gets.
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None:
        if existing.running:
            return None
        del SubprocessASGIServer._instances[None]  # not started yet: ours takes its place
    server = DiesWithCommand()
    # Prefect waits 20 s by default; a busy machine (trainings on every core) needs longer.
    seconds = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), STARTUP_SECONDS)
    with FileLock(str(prefect_home() / ".tuneloop-server.lock"), timeout=600):
        try:
            server.start(timeout=seconds)  # held until it answers: its database is migrated by then
        except RuntimeError as error:
            server.stop()
            reason = first_line(error).rstrip(".")
            raise TuneloopError(
                f"Prefect's temporary server did not start within {seconds} s ({reason}). If the "
                "machine is busy, allow it longer (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS), or start "
                "a server once and use it (make up; eval $(make -s env))."
            ) from None
    return server.api_url


def check_configured_server(url: str) -> None:
    """Fail with one message, before any flow starts, when the Prefect server PREFECT_API_URL names
    does not answer its health check (stopped, a wrong port or host), or answers but is no Prefect
    API of this major version (another server's URL, a URL without its /api): Prefect would
    otherwise stop the command with its own traceback."""
    from prefect import get_client

    fix = "unset it to run on a temporary server of this command."
    with get_client(sync_client=True) as client:
        try:
            down = client.api_healthcheck()
        except Exception as raised:  # a URL that is no URL
            down = raised
        if down is not None:
            raise TuneloopError(
                f"The Prefect server at {mask_credentials(url)} (PREFECT_API_URL) does not answer: "
                f"{first_line(down).rstrip('.')}. Start it (make up), fix PREFECT_API_URL (eval $(make -s env) "
                f"prints the running stack's), or {fix}"
            )
        try:
            client.raise_for_api_version_mismatch_once()  # Prefect checks once per process: not again
        except Exception as mismatch:  # no /admin/version there, or another major version
            reason = first_line(mismatch.__cause__ or mismatch).split(" - For more information")[0].rstrip(".")
            raise TuneloopError(
                f"{mask_credentials(url)} (PREFECT_API_URL) answers, but not as a Prefect API this command can use: "
                f"{reason}. Set PREFECT_API_URL to the Prefect server's API URL (it ends in /api; eval $(make -s env) "
                f"prints the running stack's), or {fix}"
            ) from None


def prefect_home() -> Path:
    """Prefect's home folder (its temporary server's database lives there), created."""
    from prefect.settings import PREFECT_HOME

    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
