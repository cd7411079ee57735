"""Numbers shared by training, the atlas and evaluation: codebook usage, perplexity, PSNR, entropy."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch


class CodebookUsage(NamedTuple):
    """How a codebook of K entries is used by a set of indices."""

    counts: np.ndarray  # (K,) int64 occurrences per code
    utilisation: float  # fraction of codes used at least once, in [0, 1]
    perplexity: float  # exp(entropy of the code distribution), in [1, K]
    effective_usage: float  # perplexity / K, in (0, 1]


def code_counts(indices: np.ndarray | torch.Tensor, codebook_size: int) -> np.ndarray:
    """Occurrences of each code 0..K-1 in an index array of any shape."""
    flat = torch.as_tensor(indices).reshape(-1).long().cpu()
    if flat.numel() and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(f"indices outside [0, {codebook_size})")
    return torch.bincount(flat, minlength=codebook_size).numpy().astype(np.int64)


def entropy_nats(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def codebook_usage(indices: np.ndarray | torch.Tensor, codebook_size: int) -> CodebookUsage:
    """Utilisation and perplexity of a codebook from the indices it produced (e.g. a whole split)."""
    counts = code_counts(indices, codebook_size)
    perplexity = math.exp(entropy_nats(counts))
    return CodebookUsage(
        counts=counts,
        utilisation=float((counts > 0).mean()),
        perplexity=perplexity,
        effective_usage=perplexity / codebook_size,
    )


def psnr(mse: float, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (data range 2)."""
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(data_range**2 / mse)
