"""Helpers the tests share (imported, never fixtures): paths, a free port, tables, tiny models,
shrunk configs, Prefect artifacts and the local stack. Fixtures are in the conftest files."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
SMS_SPAM = SHARED_DATA / "sms_spam" / "SMSSpamCollection.tsv"
CLINC150 = SHARED_DATA / "clinc150"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def machine_device() -> tuple[str, str]:
    """The device and precision `train.device=auto` and `train.precision=auto` must pick on this
    machine: a CUDA GPU in bf16 (fp16 where it lacks bf16), else the CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "cpu", "fp32"


def sample_command(subcommand: str, *settings: str) -> list[str]:
    """The installed `tuneloop <subcommand>` on the sample's config, with `--set` for each setting."""
    import sys

    command = [
        str(Path(sys.executable).with_name("tuneloop")),
        subcommand,
        "--config",
        str(ROOT / "data/sample/config.yaml"),
    ]
    for setting in settings:
        command += ["--set", setting]
    return command


def own_homes(tmp_path: Path, prefect_home: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment for a `tuneloop` subprocess of its own: no Prefect server named (it starts
    its temporary one), its own tuneloop home and Prefect home under `tmp_path` (a copy of
    `prefect_home` when given), plus `extra`."""
    import os
    import shutil

    if prefect_home is not None:
        shutil.copytree(prefect_home, tmp_path / "prefect")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update(TUNELOOP_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"), **extra)
    return env


def saved_checkpoint(folder: Path, pattern: str) -> Path | None:
    """The first checkpoint under `folder` matching `pattern` (e.g. `runs/*/checkpoints/checkpoint-*`)
    that was written to the end (its trainer state, written last, exists); None while there is none."""
    return next((state.parent for state in folder.glob(f"{pattern}/trainer_state.json")), None)


def trial_processes(pid: int) -> list:
    """The spawned trial processes (Prefect's process pool) under the command with this pid."""
    import psutil

    return [
        child for child in psutil.Process(pid).children(recursive=True) if "spawn_main" in " ".join(child.cmdline())
    ]


def hold_a_gpu(visible: str) -> tuple[Any, str]:
    """Another training on a host whose GPUs are `visible` (CUDA_VISIBLE_DEVICES; the lock folder
    is this environment's TUNELOOP_GPU_LOCKS): a process that holds a GPU until it is killed; and
    its GPU."""
    import os
    import subprocess
    import sys

    code = (
        "import logging, time\nfrom tasks.core.gpus import one_gpu\n"
        "with one_gpu(logging.getLogger()) as gpu:\n    print(gpu, flush=True)\n    time.sleep(120)"
    )
    host = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=host)
    assert holder.stdout is not None
    return holder, holder.stdout.readline().strip()
