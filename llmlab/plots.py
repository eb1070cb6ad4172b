"""Matplotlib set up for files, not screens: every deliverable saves PNGs through :func:`figure`."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@contextmanager
def figure(path: Path, title: str, *, ncols: int = 1, size: tuple[float, float] | None = None):
    """Yield the axes of a new figure and save it to ``path`` (PNG, 120 dpi) on exit."""
    fig, axes = plt.subplots(1, ncols, figsize=size or (5.5 * ncols, 4), squeeze=False)
    fig.suptitle(title)
    try:
        yield axes[0] if ncols > 1 else axes[0][0]
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
