"""Disk space: a check before the expensive writes (checkpoints, the saved model), and how a disk
that filled up anyway is recognised, so that such a run is reported in one line and stays
continuable once space is freed."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from tasks.core.errors import DiskSpaceError

MB = 1024 * 1024
FULL_MESSAGES = ("No space left on device", "os error 28", "Disk quota exceeded")


def weights_bytes(model_dir: str | Path) -> int:
    """The size of a model folder's weight files (safetensors, PyTorch bins)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern))


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskSpaceError, before any of it is written, when the disk holding `folder` has less
    than `needed` bytes free for `what`."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskSpaceError(
            f"{what} needs about {needed / MB:,.0f} MB free on the disk holding {folder}; it has "
            f"{free / MB:,.0f} MB. Free some space (or point TUNELOOP_HOME at a disk with more room) and run "
            "the same command again."
        )


def says_disk_full(text: str) -> bool:
    """Whether a message (a library's, a log record's, a state's) says the disk or the quota is full."""
    return any(words in text for words in FULL_MESSAGES)


def disk_full(error: BaseException | None) -> bool:
    """Whether `error` (or an error it was raised from) says the disk or the quota is full: an
    OSError with ENOSPC/EDQUOT, or a library's message for it (safetensors writes `os error 28`)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if says_disk_full(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False
