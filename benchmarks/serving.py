"""Serving a registered model: how long `tuneloop predict` takes from the registry (first call
downloads into the cache, later calls reuse it), MLflow's pyfunc, and `mlflow models serve`
(startup and one request). Needs a registered champion: run `make run` first.

Run: `python benchmarks/serving.py [--model models:/tuneloop-classifier@champion]` with
MLFLOW_TRACKING_URI (default: the home folder's SQLite store) and TUNELOOP_HOME as for the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasks.core.home import tuneloop_home
from tasks.model.predict import load_classifier, predict_texts
from tasks.registry.fetch import CACHE_FOLDER, fetch_model
from tasks.tracking.store import tracking_uri

TEXTS = ["I was charged twice for my subscription", "my parcel has not arrived", "the app crashes on login"]


def timed(action: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()  # type: ignore[operator]
    return time.perf_counter() - started, result


def serve_latency(model: str, requests: int) -> tuple[float, float]:
    """(seconds until /ping answers, median seconds of one /invocations request)."""
    port = 5123
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri()}
    started = time.perf_counter()
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        ready = time.perf_counter() - started
        seconds = []
        for _ in range(requests):
            began = time.perf_counter()
            httpx.post(
                f"http://127.0.0.1:{port}/invocations", json={"inputs": TEXTS[:1]}, timeout=60
            ).raise_for_status()
            seconds.append(time.perf_counter() - began)
        return ready, statistics.median(seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/tuneloop-classifier@champion")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    shutil.rmtree(tuneloop_home() / CACHE_FOLDER, ignore_errors=True)
    rows = []
    seconds, folder = timed(lambda: fetch_model(args.model))
    rows.append(("fetch from the registry (first call: download)", seconds))
    rows.append(("fetch again (cached)", timed(lambda: fetch_model(args.model))[0]))
    seconds, classifier = timed(lambda: load_classifier(folder))  # type: ignore[arg-type]
    rows.append(("load the model (tuneloop predict)", seconds))
    rows.append(("predict 1 text", timed(lambda: predict_texts(classifier, TEXTS[:1]))[0]))  # type: ignore[arg-type]
    import mlflow

    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    seconds, pyfunc = timed(lambda: mlflow.pyfunc.load_model(args.model))
    rows.append(("mlflow.pyfunc.load_model", seconds))
    rows.append(("pyfunc predict 1 text", timed(lambda: pyfunc.predict(TEXTS[:1]))[0]))  # type: ignore[attr-defined]
    ready, request = serve_latency(args.model, args.requests)
    rows.append(("mlflow models serve: until /ping answers", ready))
    rows.append((f"mlflow models serve: one request (median of {args.requests})", request))
    print(f"{'step':<58} {'seconds':>8}")
    for name, value in rows:
        print(f"{name:<58} {value:>8.3f}")


if __name__ == "__main__":
    main()
