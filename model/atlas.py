"""Codebook atlas (SPEC A1-A6): the article's analyses of a trained VQ-VAE codebook as numbers and figures.

Pure functions: arrays and callables in, arrays, numbers and matplotlib Figures out. Figures are built
with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend state; PNG output uses Agg);
the only file I/O is ``save_figure``. The VQ-VAE is reached through two callables, never imported:

    decode(indices (B, h, w) int) -> (B, H, W, 3) uint8
    decode_latents(z_q (B, D, h, w) float) -> (B, H, W, 3) float, the raw decoder output (about [-1, 1])

Dimension letters: N images, K codebook size, D embedding dim, h/w latent grid, H/W image size,
F flattened feature size (e.g. D*h*w), C classes, B batch.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from model.errors import UserError
from model.metrics import code_counts, entropy_nats
from model.utils import image_grid

DecodeFn = Callable[[np.ndarray], np.ndarray]  # (B, h, w) int -> (B, H, W, 3) uint8
DecodeLatentsFn = Callable[[np.ndarray], np.ndarray]  # (B, D, h, w) float -> (B, H, W, 3) float raw

#: t-SNE implementation used by default; openTSNE measured faster than scikit-learn (benchmarks/tsne.py).
TSNE_BACKEND = "opentsne"


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator, a seed or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _wrap(text: str, width: int = 18) -> str:
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


# ---------------------------------------------------------------------------------------------------
# Image grids (shared by A2, A5, A6 and the sampling grids)


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
    labels = [_wrap(label, 16) for label in row_labels]
    cols = [_wrap(c, max(6, int(tile_inches * 11))) for c in col_labels] if col_labels is not None else None
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
    return labelled_grid_figure([originals, *[images for _, images in rows]], ["original", *[name for name, _ in rows]], title)


def _format_cell(value: object) -> str:
    """A table cell: floats to 4 significant digits, everything else as text."""
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metrics_table_figure(rows: Sequence[dict], columns: Sequence[str], title: str = "Metrics by configuration") -> Figure:
    """A readable table figure, one line per configuration and one column per metric (A6)."""
    cells = [[_format_cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(col), *[len(line[i]) for line in cells]]) for i, col in enumerate(columns)]
    n_lines = max(len(rows), 1) + 1
    fig = Figure(figsize=(max(4.0, 0.09 * sum(widths) + 0.25 * len(columns)), 0.6 + 0.3 * n_lines), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=cells or [["" for _ in columns]], colLabels=list(columns), cellLoc="center",
                     colWidths=[w / sum(widths) for w in widths], bbox=[0, 0, 1, 1])
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


# ---------------------------------------------------------------------------------------------------
# A1 code usage


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
        ax.text(used + 0.5, 0.04, f"{k - used} unused codes → ", transform=ax.get_xaxis_transform(),
                color="tab:red", ha="right", va="bottom", fontsize=9)
    ax_cdf = ax.twinx()
    ax_cdf.plot(ranks, cdf, color="tab:orange", lw=1.8, label="cumulative fraction")
    ax_cdf.set_ylim(0, 1.02)
    ax_cdf.set_ylabel("cumulative fraction of all tokens", color="tab:orange")
    ax_cdf.tick_params(axis="y", colors="tab:orange")
    ax.legend(handles=[Line2D([], [], color="tab:blue", label="occurrences per code"),
                       Line2D([], [], color="tab:orange", label="CDF")], loc="center right")

    ax_idx.bar(np.arange(k), counts, width=1.0, color="tab:blue", lw=0)
    ax_idx.set_xlim(-0.5, k - 0.5)
    ax_idx.set_xlabel("code index")
    ax_idx.set_ylabel("occurrences")
    ax_idx.set_title("occurrences by code index", fontsize=10)

    if not counts.sum():
        head = f"{title}: K={k}, no tokens"
    else:
        head = (f"{title}: K={k}, utilisation {100 * used / k:.1f}% ({used} used), "
                f"perplexity {perplexity:.1f} (perplexity/K = {100 * perplexity / k:.1f}%)")
    fig.suptitle(head, fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------------
# A2 heads and tails


def ranked_codes(counts: np.ndarray, which: str = "top") -> np.ndarray:
    """Used codes ordered most-used first ("top") or least-used first ("bottom"); ties by index."""
    counts = np.asarray(counts)
    used = np.flatnonzero(counts > 0)
    if which == "top":
        order = np.lexsort((used, -counts[used]))
    elif which == "bottom":
        order = np.lexsort((used, counts[used]))
    else:
        raise ValueError(f"which must be 'top' or 'bottom', not {which!r}")
    return used[order]


def restricted_indices(
    counts: np.ndarray, rng: np.random.Generator | int | None, shape: tuple[int, ...], n: int, which: str = "top"
) -> np.ndarray:
    """Random index grids of `shape` drawn uniformly from the top-n, or the bottom-n used, codes."""
    pool = ranked_codes(counts, which)[:n]
    if pool.size == 0:
        raise ValueError("no used codes to draw from")
    return _rng(rng).choice(pool, size=shape).astype(np.int64)


def unused_indices(counts: np.ndarray, rng: np.random.Generator | int | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Random index grids made only of never-used codes; None when every code is used."""
    unused = np.flatnonzero(np.asarray(counts) == 0)
    if unused.size == 0:
        return None
    return _rng(rng).choice(unused, size=shape).astype(np.int64)


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
    rng = _rng(rng)
    counts = np.asarray(counts)
    used = int((counts > 0).sum())
    total = max(int(counts.sum()), 1)
    rows, labels = [], []
    for which in ("top", "bottom"):
        for n in ns:
            share = counts[ranked_codes(counts, which)[:n]].sum() / total
            rows.append(decode(restricted_indices(counts, rng, (per_row, *grid_hw), n, which)))
            labels.append(f"{which} {n}" + (f" (all {used} used)" if n > used else "") + f"\n{100 * share:.3g}% of tokens")
    unused = unused_indices(counts, rng, (per_row, *grid_hw))
    note = None
    if unused is None:
        note = "every code is used at least once, so there is no row of unused codes"
    else:
        rows.append(decode(unused))
        labels.append(f"unused ({len(counts) - used})")
    title = f"Heads and tails: decodes of random latents made of the top-N / bottom-N used codes (K={len(counts)})"
    return labelled_grid_figure(rows, labels, title, note=note)


# ---------------------------------------------------------------------------------------------------
# A3 individual codes


def pick_codes(counts: np.ndarray, n_most: int, n_least: int) -> list[int]:
    """The n_most most used codes, then the n_least least used (but used) codes not already picked."""
    top = [int(c) for c in ranked_codes(counts, "top")[:n_most]]
    bottom = [int(c) for c in ranked_codes(counts, "bottom") if int(c) not in top][:n_least]
    return top + bottom


def spatial_heatmap(indices_all: np.ndarray, code: int) -> np.ndarray:
    """(h, w) counts of where `code` occurs on the latent grid over all (N, h, w) index grids."""
    return (np.asarray(indices_all) == code).sum(axis=0).astype(np.int64)


def near_square(d: int) -> tuple[int, int]:
    """(rows, cols) with rows*cols >= d, as square as possible (exact factors when not too elongated)."""
    rows = max(r for r in range(1, math.isqrt(d) + 1) if d % r == 0)
    if d // rows <= 4 * rows:
        return rows, d // rows
    side = math.ceil(math.sqrt(d))
    return math.ceil(d / side), side


def codebook_images(codebook: np.ndarray, decode_latents: DecodeLatentsFn, codes: Sequence[int], grid_hw: tuple[int, int]) -> np.ndarray:
    """Raw decoder output (n, H, W, 3) for latent grids filled with one codebook vector each."""
    h, w = grid_hw
    vectors = np.asarray(codebook)[list(codes)]  # (n, D)
    z_q = np.broadcast_to(vectors[:, :, None, None], (*vectors.shape, h, w)).astype(np.float32)  # (n, D, h, w)
    return np.asarray(decode_latents(np.ascontiguousarray(z_q)), dtype=np.float32)


def raw_to_display(images: np.ndarray) -> np.ndarray:
    """Raw decoder output clipped to [-1, 1] and mapped linearly to [0, 1] floats for display."""
    return (np.clip(images, -1.0, 1.0) + 1.0) / 2.0


def rescale_to_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max rescale one image to [0, 255] uint8 (a constant image becomes all zeros)."""
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.round(scaled * 255).astype(np.uint8)


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
        axes[i, 0].set_ylabel(f"code {code}\n{counts[code]} use{'' if counts[code] == 1 else 's'}\nrank {rank[int(code)]} of {k}", rotation=0,
                              ha="right", va="center", fontsize=10)
    fig.suptitle(f"Individual codes (K={k}, D={d}, {len(indices_all)} images)", fontsize=12)
    return fig


# ---------------------------------------------------------------------------------------------------
# A4 morphological atlas: t-SNE, k-NN accuracy, NMI


def _rows_f32(flat: np.ndarray, start: int, stop: int, normalise: bool) -> np.ndarray:
    """Rows start:stop of an (N, F) array as float32, L2-normalised when asked."""
    block = np.asarray(flat[start:stop], dtype=np.float32)  # (n, F)
    if normalise:
        block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return block


def _flatten_f32(features: np.ndarray, normalise: bool, chunk: int = 1024) -> np.ndarray:
    """(N, ...) -> (N, F) float32 copy, rows L2-normalised when asked, filled chunk by chunk."""
    flat = np.asarray(features).reshape(len(features), -1)  # (N, F), a view when contiguous
    out = np.empty(flat.shape, dtype=np.float32)
    for s in range(0, len(flat), chunk):
        out[s : s + chunk] = _rows_f32(flat, s, s + chunk, normalise)
    return out


def randomized_pca(
    features: np.ndarray, n_components: int, *, normalise: bool = True, n_iter: int = 4, oversample: int = 10,
    seed: int = 0, chunk: int = 512,
) -> np.ndarray:
    """(N, ...) -> (N, n_components) float32 PCA scores, reading the features chunk by chunk.

    Halko et al. randomized SVD of the centred (optionally row-normalised) matrix with the centring
    and normalisation applied on the fly, so memory stays O((N + F) * n_components) beyond the input:
    no (N, F) copy is made, and the input may be a memory map.
    """
    flat = np.asarray(features).reshape(len(features), -1)  # (N, F)
    n, f = flat.shape
    width = min(n_components + oversample, n, f)
    mean = np.zeros(f, dtype=np.float64)  # (F,)
    for s in range(0, n, chunk):
        mean += _rows_f32(flat, s, s + chunk, normalise).sum(axis=0, dtype=np.float64)
    mean = (mean / n).astype(np.float32)

    def a_times(right: np.ndarray) -> np.ndarray:
        """(A - 1 mean^T) @ right for right (F, l) -> (N, l)."""
        right = right.astype(np.float32)
        out = np.empty((n, right.shape[1]), dtype=np.float64)
        for s in range(0, n, chunk):
            out[s : s + chunk] = _rows_f32(flat, s, s + chunk, normalise) @ right
        return out - mean.astype(np.float64) @ right

    def at_times(left: np.ndarray) -> np.ndarray:
        """(A - 1 mean^T)^T @ left for left (N, l) -> (F, l)."""
        left32 = left.astype(np.float32)
        out = np.zeros((f, left.shape[1]), dtype=np.float64)
        for s in range(0, n, chunk):
            out += _rows_f32(flat, s, s + chunk, normalise).T @ left32[s : s + chunk]
        return out - np.outer(mean, left.sum(axis=0))

    omega = np.random.default_rng(seed).standard_normal((f, width))  # (F, l)
    y = a_times(omega)  # (N, l)
    for _ in range(n_iter):
        q, _ = np.linalg.qr(y)  # (N, l)
        z, _ = np.linalg.qr(at_times(q))  # (F, l)
        y = a_times(z)  # (N, l)
    q, _ = np.linalg.qr(y)  # (N, l)
    u_b, sing, _ = np.linalg.svd(at_times(q).T, full_matrices=False)  # (l, l), (l,)
    u = q @ u_b[:, :n_components]  # (N, k)
    u *= np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])  # deterministic signs
    return (u * sing[:n_components]).astype(np.float32)  # (N, k)


def reduce_features(features: np.ndarray, n_components: int | None = 50, *, metric: str = "cosine", seed: int = 0) -> np.ndarray:
    """(N, ...) -> (N, <= n_components) float32 features in which Euclidean distance stands for `metric`.

    For "cosine" the rows are L2-normalised first (Euclidean distance between unit vectors is a
    monotone function of cosine distance); then PCA (randomized, chunked) keeps those distances as well
    as any linear projection can. The result feeds Euclidean t-SNE, k-NN and k-means in place of the
    full (N, D*h*w) latents. n_components None (or >= F) skips the PCA.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
    normalise = metric == "cosine"
    n, f = len(features), int(np.prod(np.shape(features)[1:]))
    if n_components is None or f <= n_components or n <= n_components:
        return _flatten_f32(features, normalise)
    return randomized_pca(features, n_components, normalise=normalise, seed=seed)


def embed_tsne(
    features: np.ndarray,
    perplexity: float = 50.0,
    metric: str = "cosine",
    seed: int = 0,
    *,
    pca_dims: int | None = 50,
    backend: str | None = None,
    n_jobs: int = -1,
    n_iter: int = 1000,
) -> np.ndarray:
    """(N, ...) features -> (N, 2) t-SNE embedding; features go through reduce_features(pca_dims, metric) first.

    n_iter (> 250) counts all iterations, the first 250 with early exaggeration (both backends).
    """
    n = len(features)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    x = reduce_features(features, pca_dims, metric=metric, seed=seed)  # (N, <=pca_dims)
    perplexity = min(perplexity, (n - 1) / 3.0)
    backend = backend or TSNE_BACKEND
    exaggerated = 250
    if n_iter <= exaggerated:
        raise ValueError(f"n_iter must exceed the {exaggerated} early-exaggeration iterations, got {n_iter}")
    if backend == "opentsne":
        from openTSNE import TSNE

        # same schedule as scikit-learn (250 exaggerated, then the rest); FFT gradients
        # measured faster than Barnes-Hut from a few thousand points on (benchmarks/tsne.py)
        tsne = TSNE(n_components=2, perplexity=perplexity, metric="euclidean", initialization="pca",
                    early_exaggeration_iter=exaggerated, n_iter=n_iter - exaggerated, n_jobs=n_jobs, random_state=seed,
                    negative_gradient_method="fft" if n >= 5000 else "bh")
        embedding = np.asarray(tsne.fit(x))
    elif backend == "sklearn":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=perplexity, metric="euclidean", init="pca", max_iter=n_iter,
                    random_state=seed, n_jobs=n_jobs)
        embedding = tsne.fit_transform(x)
    else:
        raise ValueError(f"backend must be 'opentsne' or 'sklearn', not {backend!r}")
    return embedding.astype(np.float32)  # (N, 2)


def class_colours(num_classes: int) -> list:
    """One distinct colour per class (tab10 up to 10 classes, tab20 beyond)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(num_classes)]


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
    handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=f"{c}: {name} ({int((labels == c).sum())})")
               for c, name in enumerate(class_names)]
    ax.legend(handles=handles, title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle(title, fontsize=12)
    return fig


def knn_accuracy(
    features: np.ndarray, labels: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0, metric: str = "cosine"
) -> tuple[float, float]:
    """Mean and std of k-NN accuracy over stratified folds (pass reduce_features output for large F)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(features).reshape(len(features), -1)  # (N, F)
    labels = np.asarray(labels)
    scores = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, labels):
        knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric=metric, algorithm="brute")
        scores.append(knn.fit(x[train], labels[train]).score(x[test], labels[test]))
    return float(np.mean(scores)), float(np.std(scores))


def kmeans_clusters(features: np.ndarray, n_clusters: int, seed: int = 0, *, normalise: bool = True) -> np.ndarray:
    """(N,) k-means cluster ids of the features (rows L2-normalised first when asked: cosine-like)."""
    from sklearn.cluster import KMeans

    x = _flatten_f32(features, normalise)  # (N, F)
    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(x)


def label_nmi(features_or_clusters: np.ndarray, labels: np.ndarray, seed: int = 0, n_clusters: int | None = None) -> float:
    """NMI between labels and k-means clusters of the features (k = number of classes), or given (N,) cluster ids."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.asarray(labels)
    x = np.asarray(features_or_clusters)
    clusters = x if x.ndim == 1 else kmeans_clusters(x, n_clusters or len(np.unique(labels)), seed)
    return float(normalized_mutual_info_score(labels, clusters))


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always guessing the most frequent class: what a classifier blind to the features reaches."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def chance_nmi(clusters: np.ndarray, labels: np.ndarray, seed: int = 0, n_shuffles: int = 10) -> float:
    """Mean NMI of the same clusters against shuffled labels: NMI's finite-sample floor (about 0)."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return float(np.mean([normalized_mutual_info_score(rng.permutation(labels), clusters) for _ in range(n_shuffles)]))


class Separability(NamedTuple):
    """How well latents separate the classes, each number beside its chance level."""

    knn: float  # mean k-NN accuracy over the folds
    knn_std: float  # its standard deviation over the folds
    knn_chance: float  # majority-class frequency
    nmi: float  # NMI(k-means clusters, labels)
    nmi_chance: float  # NMI(same clusters, shuffled labels)


def separability(
    features: np.ndarray, labels: np.ndarray, *, k: int = 5, folds: int = 5, seed: int = 0, metric: str = "cosine",
    pca_dims: int | None = 50,
) -> Separability:
    """k-NN accuracy and k-means NMI of features against labels, with chance levels, after reduce_features."""
    labels = np.asarray(labels)
    x = reduce_features(features, pca_dims, metric=metric, seed=seed)  # (N, <=pca_dims), Euclidean geometry
    knn, knn_std = knn_accuracy(x, labels, k=k, folds=folds, seed=seed, metric="euclidean")
    clusters = kmeans_clusters(x, len(np.unique(labels)), seed, normalise=False)
    return Separability(knn, knn_std, chance_accuracy(labels), label_nmi(clusters, labels), chance_nmi(clusters, labels, seed))


def separability_figure(
    knn: float, knn_chance: float, nmi: float, nmi_chance: float, *, knn_std: float | None = None, k: int = 5,
    folds: int = 5, title: str = "Do the latents separate the classes?",
) -> Figure:
    """Bars of k-NN accuracy and NMI, each beside its chance level, with values written on the bars."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(2)
    width = 0.36
    measured = ax.bar(x - width / 2, [knn, nmi], width, color="tab:blue", label="latents",
                      yerr=[knn_std or 0.0, 0.0], capsize=4)
    chance = ax.bar(x + width / 2, [knn_chance, nmi_chance], width, color="0.7", label="chance level")
    for bars, errors in ((measured, (knn_std or 0.0, 0.0)), (chance, (0.0, 0.0))):
        for bar, err in zip(bars, errors):
            text = f"{bar.get_height():.3f}" + (f" ± {err:.3f}" if err else "")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height() + err),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
    ax.set_xticks(x, [f"{k}-NN accuracy ({folds}-fold CV)\nchance = majority-class share",
                      "NMI of k-means clusters vs labels\nchance = same clusters, shuffled labels"])
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score (1 = perfect)")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


# ---------------------------------------------------------------------------------------------------
# A5 random codes


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
    rng = _rng(rng)
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
