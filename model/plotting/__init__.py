"""Figures, one place for all of them: every function here returns a ``matplotlib.figure.Figure``.

Figures are built with ``Figure`` directly (no pyplot, no global backend state; PNG output uses Agg). Data
in, figure out: no computation beyond what the picture needs, and the only file I/O is ``save_figure``.
To add a figure, add a function to the module of its topic: ``grids`` (image grids, tables), ``atlas``
(A1-A5), ``evaluation`` (judge and sampler evaluation), ``sweep`` (A6), ``realism`` (real vs synthetic).
Every figure has a title, axis labels and class names where it shows classes.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from matplotlib.figure import Figure


def wrap(text: str, width: int = 18) -> str:
    """Wrap a label onto several lines so long class names fit beside a row."""
    return "\n".join(wrapped for line in text.split("\n") for wrapped in (textwrap.wrap(line, width) or [""]))


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure (format from the suffix) through a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    return path


def class_colours(num_classes: int) -> list:
    """One distinct colour per class (tab10 up to 10 classes, tab20 beyond)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(num_classes)]
