"""A file lock beside a SQLite database while its schema is created: processes that open a fresh
database at the same moment (three sweeps started at once in a new home) would otherwise race on
the migrations (`UNIQUE constraint failed: alembic_version`). Database servers need no lock."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, else None."""
    import sqlalchemy as sa

    if not url.startswith("sqlite:"):
        return None
    parsed = sa.engine.make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def creation_lock(url: str) -> Any:
    """Held while a store at `url` is opened for the first time in this process."""
    from filelock import FileLock

    path = sqlite_file(url)
    if path is None:
        return nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=300)
