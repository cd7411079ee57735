"""Codebook atlas figures (SPEC A1-A5): code usage, heads and tails, single codes, t-SNE atlas, random codes.

The VQ-VAE is reached through the callables of ``model.atlas`` (``DecodeFn``, ``DecodeLatentsFn``).

Dimension letters: N images, K codebook size, D embedding dim, h/w latent grid, H/W image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from model.atlas import (
    DecodeFn,
    DecodeLatentsFn,
    codebook_images,
    near_square,
    random_generator,
    ranked_codes,
    raw_to_display,
    rescale_to_uint8,
    restricted_indices,
    spatial_heatmap,
    unused_indices,
)
from model.errors import UserError
from model.metrics import code_counts, entropy_nats
from model.plotting import class_colours
from model.plotting.grids import labelled_grid_figure


def code_frequency_figure(counts: np.ndarray, *, log_y: bool = True, title: str = "Codebook usage") -> Figure:
    """Counts sorted by frequency with their CDF, plus counts by code index; title gives utilisation and perplexity."""
    counts = np.asarray(counts, dtype=np.int64)
    k = counts.size
    perplexity = math.exp(entropy_nats(counts))  # exp(H) of the code distribution, in [1, K]
    ranked = np.sort(counts)[::-1]  # (K,) descending
    used = int((counts > 0).sum())
    ranks = np.arange(1, k + 1)
    cdf = np.cumsum(ranked) / max(ranked.sum(), 1)  # (K,)

    fig = Figure(figsize=(9, 6.5), layout="constrained")
    ax, ax_idx = fig.subplots(2, 1, height_ratios=(3, 2))
    ax.fill_between(ranks, ranked, step="mid", color="tab:blue", alpha=0.35, lw=0)
    ax.step(ranks, ranked, where="mid", color="tab:blue", lw=1.0, label="count")
    if log_y and used:
        ax.set_yscale("log")
        ax.set_ylim(0.7, ranked[0] * 1.5)
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("occurrences" + (" (log scale)" if log_y else ""))
    if used < k:
        ax.axvspan(used + 0.5, k + 0.5, color="tab:red", alpha=0.08, lw=0)
        ax.axvline(used + 0.5, color="tab:red", ls="--", lw=1)
        ax.text(
            used + 0.5,
            0.04,
            f"{k - used} unused codes → ",
            transform=ax.get_xaxis_transform(),
            color="tab:red",
            ha="right",
            va="bottom",
            fontsize=9,
        )
    ax_cdf = ax.twinx()
    ax_cdf.plot(ranks, cdf, color="tab:orange", lw=1.8, label="cumulative fraction")
    ax_cdf.set_ylim(0, 1.02)
    ax_cdf.set_ylabel("cumulative fraction of all tokens", color="tab:orange")
    ax_cdf.tick_params(axis="y", colors="tab:orange")
    ax.legend(
        handles=[
            Line2D([], [], color="tab:blue", label="occurrences per code"),
            Line2D([], [], color="tab:orange", label="CDF"),
        ],
        loc="center right",
    )

    ax_idx.bar(np.arange(k), counts, width=1.0, color="tab:blue", lw=0)
    ax_idx.set_xlim(-0.5, k - 0.5)
    ax_idx.set_xlabel("code index")
    ax_idx.set_ylabel("occurrences")
    ax_idx.set_title("occurrences by code index", fontsize=10)

    if not counts.sum():
        head = f"{title}: K={k}, no tokens"
    else:
        head = (
            f"{title}: K={k}, utilisation {100 * used / k:.1f}% ({used} used), "
            f"perplexity {perplexity:.1f} (perplexity/K = {100 * perplexity / k:.1f}%)"
        )
    fig.suptitle(head, fontsize=11)
    return fig


def heads_tails_figure(
    decode: DecodeFn,
    counts: np.ndarray,
    *,
    grid_hw: tuple[int, int],
    ns: Sequence[int] = (4, 16, 64, 256),
    per_row: int = 6,
    rng: np.random.Generator | int | None = 0,
) -> Figure:
    """Decodes of latents restricted to the top-N and bottom-N used codes for each N, then unused codes."""
    rng = random_generator(rng)
    counts = np.asarray(counts)
    used = int((counts > 0).sum())
    total = max(int(counts.sum()), 1)
    rows, labels = [], []
    for which in ("top", "bottom"):
        for n in ns:
            share = counts[ranked_codes(counts, which)[:n]].sum() / total
            rows.append(decode(restricted_indices(counts, rng, (per_row, *grid_hw), n, which)))
            labels.append(
                f"{which} {n}" + (f" (all {used} used)" if n > used else "") + f"\n{100 * share:.3g}% of tokens"
            )
    unused = unused_indices(counts, rng, (per_row, *grid_hw))
    note = None
    if unused is None:
        note = "every code is used at least once, so there is no row of unused codes"
    else:
        rows.append(decode(unused))
        labels.append(f"unused ({len(counts) - used})")
    title = f"Heads and tails: decodes of random latents made of the top-N / bottom-N used codes (K={len(counts)})"
    return labelled_grid_figure(rows, labels, title, note=note)


def code_panels_figure(
    codebook: np.ndarray, decode_latents: DecodeLatentsFn, indices_all: np.ndarray, codes: Sequence[int]
) -> Figure:
    """Per code: vector heatmap, raw codebook image, the same rescaled to [0, 255], spatial heatmap of occurrences."""
    codebook = np.asarray(codebook)
    k, d = codebook.shape
    indices_all = np.asarray(indices_all)
    grid_hw = tuple(indices_all.shape[1:])  # (h, w)
    for code in codes:
        if not 0 <= int(code) < k:
            raise UserError(None, f"code {code} is outside the codebook (indices 0 to {k - 1})")
    counts = code_counts(indices_all, k)
    rank = {int(c): i + 1 for i, c in enumerate(np.lexsort((np.arange(k), -counts)))}
    raw = codebook_images(codebook, decode_latents, codes, grid_hw)  # (n, H, W, 3)
    rows, cols = near_square(d)

    fig = Figure(figsize=(13, 2.9 * len(codes) + 0.6), layout="constrained")
    axes = fig.subplots(len(codes), 4, squeeze=False)
    for i, code in enumerate(codes):
        vec = np.full(rows * cols, np.nan)
        vec[:d] = codebook[code]
        lim = float(np.nanmax(np.abs(vec))) or 1.0
        im = axes[i, 0].imshow(vec.reshape(rows, cols), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        fig.colorbar(im, ax=axes[i, 0], shrink=0.8)
        axes[i, 0].set_title(f"codebook vector (D={d} as {rows}×{cols})", fontsize=9)
        axes[i, 1].imshow(raw_to_display(raw[i]), interpolation="nearest")
        axes[i, 1].set_title(f"raw decode [{raw[i].min():.2f}, {raw[i].max():.2f}] clipped to [-1, 1]", fontsize=9)
        axes[i, 2].imshow(rescale_to_uint8(raw[i]), interpolation="nearest")
        axes[i, 2].set_title("rescaled to [0, 255]", fontsize=9)
        heat = spatial_heatmap(indices_all, code)
        im = axes[i, 3].imshow(heat, cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=axes[i, 3], shrink=0.8, label="occurrences")
        axes[i, 3].set_title(f"where it occurs ({grid_hw[0]}×{grid_hw[1]} latent grid)", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(
            f"code {code}\n{counts[code]} use{'' if counts[code] == 1 else 's'}\nrank {rank[int(code)]} of {k}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=10,
        )
    fig.suptitle(f"Individual codes (K={k}, D={d}, {len(indices_all)} images)", fontsize=12)
    return fig


def atlas_figure(
    embedding: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str, *, seed: int = 0
) -> Figure:
    """Scatter of a 2-D embedding coloured by class, with a legend of class names and counts."""
    embedding, labels = np.asarray(embedding), np.asarray(labels)
    colours = class_colours(len(class_names))
    order = np.random.default_rng(seed).permutation(len(labels))  # no class painted over all others
    size = float(np.clip(20000 / max(len(labels), 1), 2, 25))
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(embedding[order, 0], embedding[order, 1], s=size, c=[colours[c] for c in labels[order]], lw=0, alpha=0.8)
    handles = [
        Line2D([], [], ls="", marker="o", color=colours[c], label=f"{c}: {name} ({int((labels == c).sum())})")
        for c, name in enumerate(class_names)
    ]
    ax.legend(handles=handles, title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle(title, fontsize=12)
    return fig


def separability_figure(
    knn: float,
    knn_chance: float,
    nmi: float,
    nmi_chance: float,
    *,
    knn_std: float | None = None,
    k: int = 5,
    folds: int = 5,
    title: str = "Do the latents separate the classes?",
) -> Figure:
    """Bars of k-NN accuracy and NMI, each beside its chance level, with values written on the bars."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(2)
    width = 0.36
    measured = ax.bar(
        x - width / 2, [knn, nmi], width, color="tab:blue", label="latents", yerr=[knn_std or 0.0, 0.0], capsize=4
    )
    chance = ax.bar(x + width / 2, [knn_chance, nmi_chance], width, color="0.7", label="chance level")
    for bars, errors in ((measured, (knn_std or 0.0, 0.0)), (chance, (0.0, 0.0))):
        for bar, err in zip(bars, errors):
            text = f"{bar.get_height():.3f}" + (f" ± {err:.3f}" if err else "")
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height() + err),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=9,
            )
    ax.set_xticks(
        x,
        [
            f"{k}-NN accuracy ({folds}-fold CV)\nchance = majority-class share",
            "NMI of k-means clusters vs labels\nchance = same clusters, shuffled labels",
        ],
    )
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score (1 = perfect)")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def random_codes_figure(
    decode: DecodeFn,
    K: int,
    grid_hw: tuple[int, int],
    n: int,
    rng: np.random.Generator | int | None = 0,
    *,
    counts: np.ndarray | None = None,
    per_row: int = 8,
) -> Figure:
    """Uniformly random index grids through the decoder (and, with counts, grids drawn by code frequency)."""
    rng = random_generator(rng)
    rows, labels = [], []
    uniform = decode(rng.integers(0, K, size=(n, *grid_hw)))  # (n, H, W, 3)
    for s in range(0, n, per_row):
        rows.append(uniform[s : s + per_row])
        labels.append("uniform over\nall K codes" if s == 0 else "")
    if counts is not None:
        p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
        weighted = decode(rng.choice(K, size=(n, *grid_hw), p=p))
        for s in range(0, n, per_row):
            rows.append(weighted[s : s + per_row])
            labels.append("by code frequency\n(no spatial order)" if s == 0 else "")
    title = f"Random codes through the decoder (K={K}, {grid_hw[0]}×{grid_hw[1]} grid), drawn without a prior"
    return labelled_grid_figure(rows, labels, title)
