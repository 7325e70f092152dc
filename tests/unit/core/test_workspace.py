"""Which run folder a training run continues: only an unfinished run of the same settings and data
whose process is gone (or that was interrupted), on this host, the newest first."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil

from tasks.core.workspace import RunRecord, find_unfinished, unfinished, write_record


def record(**changes: object) -> RunRecord:
    here = psutil.Process()
    base = RunRecord(
        label="train",
        fingerprint="f1",
        status="running",
        flow_run_id="r1",
        host=socket.gethostname(),
        pid=here.pid,
        process_started=here.create_time(),
    )
    return base.model_copy(update=changes)


def dead_process() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    return child.pid, started


def test_only_an_unfinished_run_of_the_same_inputs_without_a_live_process_is_continued() -> None:
    pid, started = dead_process()
    died = record(pid=pid, process_started=started)
    assert unfinished(died, "train", "f1")
    assert unfinished(record(status="interrupted"), "train", "f1"), "crashed or cancelled: continued"
    assert not unfinished(record(), "train", "f1"), "its process still runs it"
    assert not unfinished(died, "train", "other settings or data")
    assert not unfinished(died, "score", "f1")
    assert not unfinished(died.model_copy(update={"host": "another-host"}), "train", "f1"), "cannot tell: never taken"
    assert not unfinished(died.model_copy(update={"status": "failed"}), "train", "f1"), "a failure is an outcome"
    assert not unfinished(died.model_copy(update={"status": "finished"}), "train", "f1")
    assert not unfinished(None, "train", "f1")


def test_a_reused_process_id_is_not_the_runs_process() -> None:
    assert unfinished(record(process_started=1.0), "train", "f1"), "same pid, another process: the run's is gone"


def test_the_newest_unfinished_folder_is_continued(tmp_path: Path) -> None:
    names = ["20261201-010000-train-a", "20261202-010000-train-b", "20261203-010000-train-c"]
    for name, status in zip(names, ["interrupted", "interrupted", "finished"], strict=True):
        (tmp_path / name).mkdir()
        write_record(tmp_path / name, record(status=status))
    assert find_unfinished(tmp_path, "train", "f1") == tmp_path / names[1]
    assert find_unfinished(tmp_path, "train", "f2") is None
