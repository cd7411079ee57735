"""Figures of the realism report: real and synthetic images side by side per class, and each statistic's distribution.

Dimension letters: k images per side and class, S image side in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from model.galaxy10 import CLASS_NAMES
from model.plotting.grids import labelled_grid_figure

REAL_COLOUR, SYNTHETIC_COLOUR = "#1f4e99", "#d9720b"


def _padded(images: np.ndarray | None, k: int, side: int) -> np.ndarray:
    """(k, S, S, 3) uint8: the first k images, white tiles where there are fewer."""
    out = np.full((k, side, side, 3), 255, dtype=np.uint8)
    if images is not None:
        out[: min(k, len(images))] = images[:k]
    return out


def side_by_side_figure(
    real: Mapping[int, np.ndarray],
    synthetic: Mapping[int, np.ndarray],
    real_name: str,
    synthetic_name: str,
    per_side: int = 4,
) -> Figure:
    """A row per class: ``per_side`` real images on the left, as many synthetic ones on the right.

    ``real`` and ``synthetic`` map a class id to (k, S, S, 3) uint8 images; a real file without labels comes
    as the single key -1, shown as one row beside the first synthetic images of any class.
    """
    side = next(iter(real.values())).shape[1]
    if set(real) == {-1}:
        pool = np.concatenate([synthetic[c] for c in sorted(synthetic)])  # (k', S, S, 3) any class
        pairs, labels = [(real[-1], pool)], ["all classes\n(real file has no labels)"]
    else:
        classes = sorted(set(real) | set(synthetic))
        pairs = [(real.get(c), synthetic.get(c)) for c in classes]
        labels = [CLASS_NAMES[c] for c in classes]
    gap = np.full((1, side, side, 3), 255, dtype=np.uint8)  # a blank tile between the two sides
    rows = [np.concatenate([_padded(r, per_side, side), gap, _padded(s, per_side, side)]) for r, s in pairs]
    columns = ["real"] * per_side + [""] + ["synthetic"] * per_side
    title = f"Real ({real_name}, left) vs synthetic ({synthetic_name}, right): the first {per_side} of each class"
    return labelled_grid_figure(rows, labels, title, col_labels=columns, tile_inches=1.0)


def statistics_figure(
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, np.ndarray],
    statistics: Mapping[str, dict],
    real_name: str,
    synthetic_name: str,
    ncols: int = 4,
) -> Figure:
    """One panel per statistic: histograms of the real and synthetic values (fraction of images per bin).

    ``statistics`` maps a name to a dict with its ``unit`` and univariate ``auc`` (the report's rows).
    """
    names = list(statistics)
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.7 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        r, s = (np.asarray(v[name], dtype=np.float64) for v in (real, synthetic))
        r, s = r[np.isfinite(r)], s[np.isfinite(s)]
        both = np.concatenate([r, s])
        if len(both) == 0:
            ax.text(0.5, 0.5, "undefined on every image", ha="center", va="center", transform=ax.transAxes)
        else:
            lo, hi = np.percentile(both, [1, 99])
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            bins = np.linspace(lo, hi, 25)
            for values, colour, label in ((r, REAL_COLOUR, "real"), (s, SYNTHETIC_COLOUR, "synthetic")):
                if len(values):
                    weights = np.full(len(values), 1.0 / len(values))
                    clipped = np.clip(values, lo, hi)  # the outer 1 % fall in the end bins
                    ax.hist(clipped, bins=bins, weights=weights, histtype="stepfilled", alpha=0.35, color=colour)
                    ax.hist(clipped, bins=bins, weights=weights, histtype="step", color=colour, label=label)
        ax.set_title(f"{name} (AUC {statistics[name]['auc']:.2f})", fontsize=10)
        ax.set_xlabel(statistics[name]["unit"], fontsize=9)
        ax.set_ylabel("fraction of images", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Per-image statistics: real ({real_name}, {len(next(iter(real.values())))} images) vs synthetic "
        f"({synthetic_name}, {len(next(iter(synthetic.values())))} images); AUC = P(real > synthetic); "
        "the outer 1 % of values fall in the end bins",
        fontsize=11,
    )
    return fig
