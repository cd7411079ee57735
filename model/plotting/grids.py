"""Image grids and tables: labelled rows of images (A2, A5, A6, sampling grids) and metric tables.

Dimension letters: n images in a row, H/W image size.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from model.plotting import wrap
from model.utils import image_grid


def labelled_grid_figure(
    images_by_row: Sequence[np.ndarray],
    row_labels: Sequence[str],
    title: str,
    *,
    col_labels: Sequence[str] | None = None,
    tile_inches: float = 1.15,
    note: str | None = None,
) -> Figure:
    """Rows of (n, H, W, 3) uint8 images, each row labelled on its left (e.g. class names, temperatures).

    The layout is computed in inches (label column sized to the longest label line), so long class
    names are never clipped whatever the number of rows or columns.
    """
    if len(images_by_row) != len(row_labels):
        raise ValueError(f"{len(images_by_row)} image rows but {len(row_labels)} labels")
    if not images_by_row:
        raise ValueError("no image rows to show")
    n_cols = max(len(row) for row in images_by_row)
    strips = []
    for row in images_by_row:
        row = np.asarray(row)
        if row.ndim == 4 and row.shape[-1] == 1:
            row = np.repeat(row, 3, axis=-1)  # (n, H, W, 3)
        strips.append(image_grid(row, nrow=n_cols, pad=2, value=255))  # (H', n_cols*W', 3)
    labels = [wrap(label, 16) for label in row_labels]
    cols = [wrap(c, max(6, int(tile_inches * 11))) for c in col_labels] if col_labels is not None else None
    col_lines = max((c.count("\n") + 1 for c in cols), default=0) if cols else 0
    label_in = 0.25 + 0.085 * max((len(line) for label in labels for line in label.split("\n")), default=0)
    width_in = n_cols * tile_inches
    heights = [width_in * strip.shape[0] / strip.shape[1] for strip in strips]  # inches per row
    fig_w = label_in + width_in + 0.15
    title = "\n".join(textwrap.wrap(title, max(24, int(fig_w * 8.5)))) or title  # about 8.5 characters per inch
    gap, bottom = 0.06, 0.4 if note else 0.1
    top = 0.55 + 0.22 * title.count("\n") + (0.1 + 0.16 * col_lines if cols else 0.0)
    fig_h = top + sum(heights) + gap * (len(strips) - 1) + bottom
    fig = Figure(figsize=(fig_w, fig_h))
    y = fig_h - top
    for r, (strip, label, h) in enumerate(zip(strips, labels, heights)):
        y -= h
        ax = fig.add_axes((label_in / fig_w, y / fig_h, width_in / fig_w, h / fig_h))
        y -= gap
        ax.imshow(strip, interpolation="nearest", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
        ax.yaxis.set_label_coords(-0.1 / width_in, 0.5)
        if r == 0 and cols is not None:
            w = strip.shape[1] / n_cols
            ax.set_xticks([w * (i + 0.5) for i in range(len(cols))], cols, fontsize=9)
            ax.xaxis.tick_top()
            ax.tick_params(length=0)
    fig.suptitle(title, fontsize=12, y=1 - 0.12 / fig_h, va="top")
    if note:
        fig.supxlabel(note, fontsize=9, style="italic", y=0.08 / fig_h, va="bottom")
    return fig


def comparison_figure(rows: Sequence[tuple[str, np.ndarray]], originals: np.ndarray, title: str) -> Figure:
    """Originals on top, then one labelled row of reconstructions per configuration (A6)."""
    return labelled_grid_figure(
        [originals, *[images for _, images in rows]], ["original", *[name for name, _ in rows]], title
    )


def _format_cell(value: object) -> str:
    """A table cell: floats to 4 significant digits, everything else as text."""
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metrics_table_figure(
    rows: Sequence[dict], columns: Sequence[str], title: str = "Metrics by configuration"
) -> Figure:
    """A readable table figure, one line per configuration and one column per metric (A6)."""
    cells = [[_format_cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(col), *[len(line[i]) for line in cells]]) for i, col in enumerate(columns)]
    n_lines = max(len(rows), 1) + 1
    fig = Figure(
        figsize=(max(4.0, 0.09 * sum(widths) + 0.25 * len(columns)), 0.6 + 0.3 * n_lines), layout="constrained"
    )
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(
        cellText=cells or [["" for _ in columns]],
        colLabels=list(columns),
        cellLoc="center",
        colWidths=[w / sum(widths) for w in widths],
        bbox=[0, 0, 1, 1],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#dde6f0")
        elif r % 2 == 0:
            cell.set_facecolor("#f5f5f5")
    fig.suptitle(title, fontsize=12)
    return fig
