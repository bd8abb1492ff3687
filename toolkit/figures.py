"""Writing matplotlib figures as PNG files, headless and never half-written."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the Agg backend: clipedge runs on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: Path, dpi: int = 120) -> None:
    """Save to a temporary name and rename, so a reader never sees a partial PNG."""
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=dpi)
    pyplot().close(figure)
    os.replace(partial, path)
