"""One GPU per run or trial on a host with several: trainings that run at once on one machine (a
local round's trial processes, a process worker's flow runs, `tuneloop run` beside them) each take
the first GPU no other holds (an exclusive lock on a file per GPU, released when the training ends
or its process dies) and see only that one (CUDA_VISIBLE_DEVICES), instead of all training on the
first GPU. With all GPUs held, a training waits for one. A host with one GPU (a Kubernetes Job or a
container with one GPU), or none, is left as it is. Where CUDA started before the choice, the run
sees every GPU and trains on the first (tasks/model/plan.py::training_arguments)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VISIBLE = "CUDA_VISIBLE_DEVICES"
LOCKS_VARIABLE = "TUNELOOP_GPU_LOCKS"
WAIT_SECONDS = 1.0
CUDA_ERROR_NOT_INITIALIZED = 3
PINNED: list[str] = []  # the GPU this process took, once it took one
UNPINNED: list[str | None] = []  # CUDA_VISIBLE_DEVICES as this process found it, before it took one
HOLDING: list[int] = []  # one entry per block of this process that holds it now


def lock_folder() -> Path:
    """Where the host's GPU locks live: TUNELOOP_GPU_LOCKS, else one folder per user in the
    temporary folder, shared by every tuneloop process of that user on the host, whatever its
    TUNELOOP_HOME (users who share a host's GPUs set TUNELOOP_GPU_LOCKS to one folder they can all
    write)."""
    if os.environ.get(LOCKS_VARIABLE):
        return Path(os.environ[LOCKS_VARIABLE]).expanduser()
    getuid = getattr(os, "getuid", None)
    return Path(tempfile.gettempdir()) / f"tuneloop-gpus-{getuid() if getuid else 'user'}"


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU the driver
    reports (NVML: asking does not initialise CUDA, so the choice below still takes effect)."""
    listed = os.environ.get(VISIBLE)
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and not gpu.strip().startswith("-")]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def cuda_started() -> bool:
    """Whether this process has started the CUDA driver already (any CUDA call, even
    torch.cuda.is_available(), does): then CUDA_VISIBLE_DEVICES no longer changes what it sees.
    Asked of the driver itself, which answers CUDA_ERROR_NOT_INITIALIZED before it starts."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver here: nothing started
        return False
    count = ctypes.c_int()
    return int(driver.cuDeviceGetCount(ctypes.byref(count))) != CUDA_ERROR_NOT_INITIALIZED


def take_free(gpus: list[str], folder: Path) -> tuple[str, int] | None:
    """Lock the first of `gpus` that no other process holds: (the GPU, the open lock file)."""
    import fcntl

    from tasks.core.errors import ConfigError

    for gpu in gpus:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = os.open(folder / f"gpu-{gpu}.lock", os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write
        except OSError as error:
            raise ConfigError(
                f"The GPU lock folder {folder} cannot be used ({error.strerror}): set {LOCKS_VARIABLE} to a "
                "folder every tuneloop process on this host can write."
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            continue
        return gpu, handle
    return None


def choosable(gpus: list[str], log: logging.Logger | logging.LoggerAdapter) -> bool:
    """Whether this process, which has taken no GPU yet, can choose one of `gpus`: several of them,
    file locks on this platform, and CUDA not started here yet (then it sees every GPU for good)."""
    if len(gpus) < 2 or importlib.util.find_spec("fcntl") is None:
        return False
    if cuda_started():
        log.info(f"CUDA is in use in this process already: training on its first of {len(gpus)} GPUs.")
        return False
    return True


def hold(gpus: list[str], log: logging.Logger | logging.LoggerAdapter) -> tuple[str, int]:
    """Lock the first free of `gpus`, waiting while all are held, and pin this process to it (once):
    (the GPU, the open lock file)."""
    folder = lock_folder()
    taken = take_free(gpus, folder)
    if taken is None:
        held = "its GPU is" if PINNED else f"all {len(gpus)} GPUs of this host are"
        log.info(f"Waiting for a GPU: {held} held by other runs or trials.")
    while taken is None:
        time.sleep(WAIT_SECONDS)
        taken = take_free(gpus, folder)
    gpu = taken[0]
    if PINNED:
        log.info(f"On GPU {gpu}, this process's since it first took one.")
    else:
        log.info(f"On GPU {gpu} of {', '.join(gpus)} (the first no other run or trial on this host holds).")
        PINNED.append(gpu)
        UNPINNED.append(os.environ.get(VISIBLE))
        os.environ[VISIBLE] = gpu  # for good: this process's CUDA will see only this GPU
    return taken


def host_gpus() -> str | None:
    """The GPUs a process this one starts may choose from (a local round's trial processes): this
    process's CUDA_VISIBLE_DEVICES as it was before it took a GPU (None: unset, every GPU)."""
    return UNPINNED[0] if UNPINNED else os.environ.get(VISIBLE)


@contextmanager
def one_gpu(log: logging.Logger | logging.LoggerAdapter, device: str = "auto") -> Iterator[str | None]:
    """Hold one of this host's GPUs for the block and let CUDA see only it; yields the GPU (None
    where there is nothing to choose: `device` (train.device) is not auto or cuda, one GPU or none,
    no file locks on this platform, or CUDA already started in this process). A process that took a
    GPU keeps it (CUDA cannot switch once started): its next training (a local round's trial
    processes run one trial after another) holds the same GPU again, waiting while another process
    holds it; a block inside one that holds it (a sweep's trial in the sweep's process) shares the hold."""
    if device not in ("auto", "cuda"):
        yield None
        return
    handle = None
    if HOLDING:  # inside a block of this process that holds its GPU
        gpu = PINNED[0]
    else:
        gpus = PINNED or visible_gpus()
        if not PINNED and not choosable(gpus, log):
            yield None
            return
        gpu, handle = hold(gpus, log)
    HOLDING.append(1)
    try:
        yield gpu
    finally:
        HOLDING.pop()
        if handle is not None:
            with contextlib.suppress(OSError):
                os.close(handle)  # releases the lock
