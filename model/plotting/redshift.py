"""Redshift figures (issue 14): does a sample look as far away as the redshift it was asked for?

Dimension letters: N images, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from model.plotting import class_colours


def redshift_recovery_figure(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]],
    class_names: Sequence[str],
    title: str = "Redshift read back from the image by the regressor",
) -> Figure:
    """One scatter per (title, asked z (N,), read z (N,), class (N,), rho) panel, points coloured by class, the
    1:1 line dashed, Spearman's rho in each panel's title."""
    colours = class_colours(len(class_names))
    fig = Figure(figsize=(4.2 * len(panels) + 1.8, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True, sharey=True))
    every = np.concatenate([np.concatenate([p[1], p[2]]) for p in panels])
    every = every[np.isfinite(every) & (every > 0)]
    lo, hi = (float(every.min()) * 0.9, float(every.max()) * 1.1) if every.size else (0.005, 0.3)
    for ax, (name, asked, read, labels, rho) in zip(axes, panels, strict=True):
        for k, class_name in enumerate(class_names):
            mine = np.asarray(labels) == k
            if mine.any():
                ax.scatter(asked[mine], read[mine], s=9, alpha=0.7, color=colours[k], label=class_name)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlim(lo, hi), ax.set_ylim(lo, hi)
        ax.set_title(f"{name}\nSpearman ρ = {rho:.2f}", fontsize=10)
        ax.set_xlabel("redshift asked for (catalogue z for real images)")
    axes[0].set_ylabel("redshift read back from the image")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8, markerscale=1.5)
    fig.suptitle(title, fontsize=11)
    return fig
