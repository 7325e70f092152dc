"""Disk space: the check before the expensive writes, and recognising a disk that filled up anyway,
however a library reports it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tasks.core.disk import check_free_space, disk_full, free_bytes
from tasks.core.errors import DiskSpaceError


def test_a_full_disk_is_recognised_through_the_chain_and_by_the_libraries_words() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("saving the checkpoint failed") from cause
    except RuntimeError as error:
        assert disk_full(error)
    assert disk_full(Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull }) os error 28"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(OSError(errno.ENOENT, "No such file or directory"))
    assert not disk_full(ValueError("bad value")) and not disk_full(None)


def test_the_space_check_names_what_needs_how_much_and_where(tmp_path: Path) -> None:
    check_free_space(tmp_path / "not-yet" / "made", 1, "Nothing")  # the nearest existing parent's disk
    with pytest.raises(DiskSpaceError, match=r"Fine-tuning x needs about .* MB free on the disk holding"):
        check_free_space(tmp_path, free_bytes(tmp_path) + 10**12, "Fine-tuning x")
