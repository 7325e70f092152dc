"""Pictures: matplotlib with the non-interactive Agg backend, chosen in one place (workers and CI
have no display, and a GUI backend picked at import would fail or leak windows from threads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use: the CLI starts without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path, dpi: int = 120) -> Path:
    """Write a finished figure as a PNG (tight bounding box) and free it."""
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(figure)
    return path
