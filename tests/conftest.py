"""Fixtures shared by every kind of test: an isolated tuneloop home, offline settings, real data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Under pytest-xdist, one compute thread per process, set before anything imports torch: the tests
# run one per core and start servers and trial processes of their own; oversubscribed OpenMP
# threads spin and slow every test down, and a tiny model gains nothing from threads.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from tests.helpers import CLINC150, ROOT, SMS_SPAM

os.environ.update(
    {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process has taken no GPU yet (a process keeps the one it took, and sees only it from
    then on): each test starts with none taken and the GPUs it was started with."""
    from tasks.core import gpus

    monkeypatch.setattr(gpus, "PINNED", [])
    monkeypatch.setattr(gpus, "UNPINNED", [])
    if gpus.VISIBLE in os.environ:
        monkeypatch.setenv(gpus.VISIBLE, os.environ[gpus.VISIBLE])
    else:
        monkeypatch.delenv(gpus.VISIBLE, raising=False)


@pytest.fixture(autouse=True)
def tuneloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes under its own TUNELOOP_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNELOOP_HOME", str(home))
    return home


@pytest.fixture
def sms_spam() -> Path:
    """The shared SMS Spam Collection; tests that use it are marked `realdata` and skip without it."""
    if not SMS_SPAM.is_file():
        pytest.skip(f"real data not found at {SMS_SPAM} (see ../shared/data/README)")
    return SMS_SPAM


@pytest.fixture
def clinc150() -> Path:
    """The shared CLINC150 folder (train/validation/test CSVs, domains.json); tests that use it are
    marked `realdata` and skip without it."""
    if not (CLINC150 / "train.csv").is_file():
        pytest.skip(f"real data not found at {CLINC150} (see ../shared/data/clinc150/README.md)")
    return CLINC150


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT whose vocabulary covers the test tables and the sample data."""
    import pandas as pd

    from tests.helpers.models import build_tiny_bert
    from tests.helpers.tables import clean_table

    sample = pd.read_csv(ROOT / "data" / "sample" / "support_tickets.csv", dtype=str).fillna("")
    texts = clean_table(40)["text"].tolist() + (sample["subject"] + " " + sample["body"]).tolist()
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert", texts)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect API for the session (it takes 15 s to start), for the flow and fault tests; yields
    its URL. Task results go to a temp folder."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Bind Prefect's console handler to the session's stderr now, not to the stream of whichever
    # CliRunner call happens to run the first flow (that stream is closed after the call).
    ensure_logging_setup()
    storage: Path = tmp_path_factory.mktemp("prefect-results")
    with prefect_test_harness(server_startup_timeout=120), temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        yield str(PREFECT_API_URL.value())
