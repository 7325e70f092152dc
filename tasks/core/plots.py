"""Pictures: matplotlib with the non-interactive Agg backend, chosen in one place (workers and CI
have no display, and a GUI backend picked at import would fail or leak windows from threads)."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use: the CLI starts without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
