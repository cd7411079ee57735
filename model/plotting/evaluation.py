"""Evaluation figures (SPEC E1): the judge's confusion matrix and per-class scores, and how a sampler's samples
fare against real images (class-conditional accuracy against cfg_scale, Fréchet distances).

Dimension letters: K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from model.metrics import balanced_accuracy
from model.plotting import class_colours


def confusion_figure(
    confusion: np.ndarray, class_names: Sequence[str], title: str = "Judge confusion matrix", note: str = ""
) -> Figure:
    """Confusion matrix normalised per true class, each cell annotated with its percentage; ``note``, when given,
    is a second title line."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1, keepdims=True)  # (K, 1)
    norm = np.divide(confusion, support, out=np.zeros_like(confusion), where=support > 0)  # rows sum to 1
    k = len(class_names)
    fig = Figure(figsize=(2.5 + 0.75 * k, 2.0 + 0.65 * k), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    for i in range(k):
        for j in range(k):
            if confusion[i, j] > 0:
                ax.text(
                    j,
                    i,
                    f"{100 * norm[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(k), list(class_names), rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(k), [f"{name} ({int(n)})" for name, n in zip(class_names, support[:, 0])], fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (support)")
    acc = np.trace(confusion) / max(confusion.sum(), 1)
    balanced = balanced_accuracy({"recall": np.diag(norm), "support": support[:, 0]})
    scores = f"balanced accuracy {100 * balanced:.1f}%, plain {100 * acc:.1f}%"
    fig.suptitle(f"{title} ({scores}, % of each true class)" + (f"\n{note}" if note else ""), fontsize=11)
    return fig


def class_accuracy_curve_figure(
    cfg_values: Sequence[float],
    accuracies_per_class: np.ndarray,
    overall: Sequence[float],
    class_names: Sequence[str],
    title: str = "Does the judge recognise the conditioning class?",
) -> Figure:
    """Judge accuracy of samples against cfg_scale: one line per class, overall in black, chance 1/K dashed."""
    cfg = np.asarray(cfg_values, dtype=np.float64)
    acc = np.asarray(accuracies_per_class, dtype=np.float64)  # (n_cfg, K)
    k = len(class_names)
    colours = class_colours(k)
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.subplots()
    for c, name in enumerate(class_names):
        ax.plot(cfg, acc[:, c], marker="o", ms=4, lw=1.2, color=colours[c], label=name)
    ax.plot(cfg, overall, marker="s", lw=3, color="black", label="all classes")
    ax.axhline(1.0 / k, color="0.5", ls="--", lw=1, label=f"chance (1/{k})")
    if cfg.min() > 0 and cfg.max() / cfg.min() >= 10:
        ax.set_xscale("log")
    ax.set_xticks(cfg, [f"{v:g}" for v in cfg])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("classifier-free guidance scale (cfg_scale)")
    ax.set_ylabel("fraction of samples judged as their class")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=12)
    return fig


def precision_recall_figure(
    report: dict[str, Any], class_names: Sequence[str], title: str = "Judge per-class precision and recall"
) -> Figure:
    """Grouped bars of per-class precision and recall from classification_report."""
    k = len(class_names)
    x = np.arange(k)
    fig = Figure(figsize=(2 + 0.8 * k, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(x - 0.2, report["precision"], 0.4, label="precision", color="tab:blue")
    ax.bar(x + 0.2, report["recall"], 0.4, label="recall", color="tab:orange")
    ax.set_xticks(x, list(class_names), rotation=35, ha="right", fontsize=9)
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    scores = f"balanced accuracy {100 * balanced_accuracy(report):.1f}%, plain {100 * report['accuracy']:.1f}%"
    fig.suptitle(f"{title} ({scores})", fontsize=12)
    return fig


def frechet_bars_figure(
    rows: dict[str, np.ndarray],
    overall: dict[str, float],
    intervals: dict[str, tuple[float, float]],
    class_names: Sequence[str],
    title: str,
) -> Figure:
    """Left: the class-balanced FD of each compared set with its 95 % interval; right: per-class bars (log scale)."""
    k = len(class_names)
    x = np.arange(k)
    width = 0.8 / max(len(rows), 1)
    colours = ("tab:blue", "tab:green", "tab:red", "tab:gray")
    fig = Figure(figsize=(4 + 0.85 * k, 5.4), layout="constrained")
    left, ax = fig.subplots(1, 2, width_ratios=[1.2, k * 0.85])
    for j, name in enumerate(overall):
        lo, hi = intervals.get(name, (np.nan, np.nan))
        value = overall[name]
        err = np.array([[max(value - lo, 0.0)], [max(hi - value, 0.0)]]) if np.isfinite([lo, hi]).all() else None
        left.bar(j, value, 0.7, color=colours[j % len(colours)], yerr=err, capsize=5)
        top = hi if np.isfinite(hi) else value
        left.annotate(f"{value:.3g}", (j, top), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    left.set_xticks(range(len(overall)), [n.split(",")[0].split(":")[0] for n in overall], rotation=35, ha="right")
    left.set_ylabel("class-balanced Fréchet distance (95 % interval)")
    left.margins(y=0.12)
    left.set_title("all classes", fontsize=10)
    left.grid(axis="y", alpha=0.3)
    values = np.array([np.asarray(v, dtype=np.float64) for v in rows.values()]).reshape(len(rows), k)  # (sets, K)
    shown = np.isfinite(values) & (values > 0)
    for j, name in enumerate(rows):
        ax.bar(
            x - 0.4 + width * (j + 0.5),
            np.where(shown[j], values[j], np.nan),
            width,
            color=colours[j % len(colours)],
            label=f"{name} (all classes {overall.get(name, float('nan')):.3g})",
        )
    if shown.any():
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1)
    for c in range(k):
        if not np.isfinite(values[:, c]).any():
            ax.text(
                c,
                0.02,
                "skipped:\n< 2 images",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
                color="0.4",
            )
    ax.set_xticks(x, list(class_names), rotation=35, ha="right", fontsize=9)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylabel("Fréchet distance per class (lower is closer)")
    ax.set_title("per class", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=len(rows), frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=12)
    return fig


def accuracy_curve_figure(
    cfg_values: Sequence[float],
    per_class: np.ndarray,
    overall: Sequence[float],
    overall_intervals: Sequence[tuple[float, float]],
    real: tuple[float, float, float],
    recon: tuple[float, float, float],
    class_names: Sequence[str],
    top_p: float = 1.0,
) -> Figure:
    """The class-balanced accuracy-vs-cfg curve with its 95 % intervals, beside the judge on real test images and on
    their reconstructions (value, lo, hi each: a line and a band); the title names the samples' top-p."""
    fig = class_accuracy_curve_figure(
        cfg_values,
        per_class,
        overall,
        class_names,
        title=f"Class-conditional balanced accuracy: samples (top-p {top_p:g}) judged as the class they were asked for",
    )
    ax = fig.axes[0]
    bounds = np.asarray(overall_intervals, dtype=np.float64).reshape(-1, 2)  # (n_cfg, 2)
    ax.fill_between(np.asarray(cfg_values, float), bounds[:, 0], bounds[:, 1], color="black", alpha=0.12, lw=0)
    for (value, lo, hi), colour, style, what in (
        (real, "tab:green", ":", "real test images"),
        (recon, "tab:purple", "-.", "VQ-VAE reconstructions"),
    ):
        ax.axhline(value, color=colour, ls=style, lw=2, label=f"{what} ({value:.2f} [{lo:.2f}, {hi:.2f}])")
        ax.axhspan(lo, hi, color=colour, alpha=0.1, lw=0)
    ax.set_ylabel("class-balanced accuracy (mean per-class recall)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return fig
