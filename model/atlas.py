"""Codebook atlas analyses (SPEC A1-A5) of a trained VQ-VAE: which codes are used, where, and what they decode to.

Pure functions of arrays and callables; the figures are in ``model.plotting.atlas``, the embeddings and
separability numbers (A4) in ``model.embedding``. The analyses reach the VQ-VAE through two callables
(``decoders`` builds them):

    decode(indices (B, h, w) int) -> (B, H, W, 3) uint8
    decode_latents(z_q (B, D, h, w) float) -> (B, H, W, 3) float, the raw decoder output (about [-1, 1])

Dimension letters: N images, K codebook size, D embedding dim, h/w latent grid, H/W image size, B batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from model.utils import evaluating, unit_to_uint8
from model.vqvae import VQVAE

DecodeFn = Callable[[np.ndarray], np.ndarray]  # (B, h, w) int -> (B, H, W, 3) uint8
DecodeLatentsFn = Callable[[np.ndarray], np.ndarray]  # (B, D, h, w) float -> (B, H, W, 3) float raw


def random_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator, a seed or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


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
    return random_generator(rng).choice(pool, size=shape).astype(np.int64)


def unused_indices(
    counts: np.ndarray, rng: np.random.Generator | int | None, shape: tuple[int, ...]
) -> np.ndarray | None:
    """Random index grids made only of never-used codes; None when every code is used."""
    unused = np.flatnonzero(np.asarray(counts) == 0)
    if unused.size == 0:
        return None
    return random_generator(rng).choice(unused, size=shape).astype(np.int64)


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


def codebook_images(
    codebook: np.ndarray, decode_latents: DecodeLatentsFn, codes: Sequence[int], grid_hw: tuple[int, int]
) -> np.ndarray:
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


def decoders(vqvae: VQVAE):
    """(decode indices -> uint8 images, decode latents -> raw float images) for the analysis functions."""

    @torch.no_grad()
    def decode(indices: np.ndarray) -> np.ndarray:
        with evaluating(vqvae):
            return unit_to_uint8(vqvae.decode_indices(torch.as_tensor(np.asarray(indices), dtype=torch.long)))

    @torch.no_grad()
    def decode_latents(latents: np.ndarray) -> np.ndarray:
        with evaluating(vqvae):
            x = vqvae.decode(torch.as_tensor(np.asarray(latents), dtype=torch.float32))  # (B, 3, H, W)
        return x.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3), raw decoder output

    return decode, decode_latents


def quantized_features(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N, T) indices -> (N, T * D) float32 quantized latents (the article's t-SNE input)."""
    return codebook[np.asarray(indices, dtype=np.int64)].reshape(len(indices), -1).astype(np.float32)
