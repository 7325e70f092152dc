"""`mlflow models serve` of a registered model, as a user starts it, asked for labels over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port


def served_labels(model_uri: str, texts: list[str], store: str) -> list[str]:
    """Start `mlflow models serve -m model_uri` (local environment) against `store`, post `texts` to
    /invocations and return the labels it answers; the server is stopped again."""
    import httpx

    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        *("models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)),
    ]
    # MLflow's server starts `uvicorn` by name: the environment's bin folder must be on PATH (as after activate).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": store}
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": texts}, timeout=60)
        assert answer.status_code == 200, answer.text
        return [row["label"] for row in answer.json()["predictions"]]
    finally:
        server.terminate()
        server.wait(timeout=30)
