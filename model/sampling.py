"""Generate galaxies: prior tokens -> VQ-VAE latents -> images, for any mix of class labels.

Dimension letters: N images, T tokens (= h * w), h/w latent grid, D embedding dim, S image side.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from model.prior import ConditionalPrior
from model.utils import unit_to_uint8
from model.vqvae import VQVAE, evaluating

UNCONDITIONAL = -1  # a label meaning "no class" (the prior's null class)


class Samples(NamedTuple):
    """What one call of ``sample`` returns, in the order of the requested labels."""

    images: np.ndarray  # (N, S, S, 3) uint8
    latents: np.ndarray  # (N, D, h, w) float32, the quantized latents z_q
    indices: np.ndarray  # (N, h, w) int64 codebook indices


def check_compatible(prior: ConditionalPrior, vqvae: VQVAE) -> None:
    """The prior's vocabulary and grid must be the VQ-VAE's codebook and latent grid."""
    pc, vc = prior.config, vqvae.config
    if (pc.vocab_size, pc.grid_h, pc.grid_w) != (vc.codebook_size, vc.grid, vc.grid):
        raise ValueError(
            f"prior (K={pc.vocab_size}, grid {pc.grid_h}x{pc.grid_w}) does not match the VQ-VAE "
            f"(K={vc.codebook_size}, grid {vc.grid}x{vc.grid})"
        )


@torch.no_grad()
def sample(
    prior: ConditionalPrior,
    vqvae: VQVAE,
    labels: Sequence[int] | np.ndarray,
    *,
    cfg_scale: float = 3.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> Samples:
    """One image per entry of ``labels`` (class ids, or -1 for unconditional), seeded and batched.

    ``progress(k)`` is called with the number of token steps done so far, summed over batches.
    """
    check_compatible(prior, vqvae)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    bad = labels[(labels < UNCONDITIONAL) | (labels >= prior.num_classes)]
    if bad.size:
        raise ValueError(f"class label {int(bad[0])} is outside 0-{prior.num_classes - 1} (or -1 for unconditional)")
    device = prior.token_emb.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = np.zeros((len(labels), prior.seq_len), dtype=np.int64)
    steps_done = 0
    # conditional and unconditional requests are separate batches (a guided step needs both halves)
    for conditional in (True, False):
        rows = np.flatnonzero((labels >= 0) == conditional)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]

            def step(i: int, _base: int = steps_done) -> None:
                if progress is not None:
                    progress(_base + i)

            out = prior.generate(
                len(chunk),
                torch.as_tensor(labels[chunk], device=device) if conditional else None,
                cfg_scale=cfg_scale if conditional else 1.0,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                progress=step,
            )
            tokens[chunk] = out.cpu().numpy()
            steps_done += prior.seq_len
    return decode_tokens(vqvae, tokens, batch_size=batch_size)


@torch.no_grad()
def decode_tokens(vqvae: VQVAE, tokens: np.ndarray, batch_size: int = 256) -> Samples:
    """(N, T) token rows -> images, latents and index grids, decoded in eval mode."""
    grid = vqvae.config.grid
    device = next(vqvae.parameters()).device
    indices = np.asarray(tokens, dtype=np.int64).reshape(len(tokens), grid, grid)  # (N, h, w), row-major
    images, latents = [], []
    with evaluating(vqvae):
        for start in range(0, len(indices), batch_size):
            idx = torch.from_numpy(indices[start : start + batch_size]).to(device)  # (B, h, w)
            z_q = vqvae.indices_to_latents(idx)  # (B, D, h, w)
            latents.append(z_q.float().cpu().numpy())
            images.append(unit_to_uint8(vqvae.decode(z_q)))
    if not images:
        s = vqvae.config.image_size
        return Samples(np.zeros((0, s, s, 3), np.uint8), np.zeros((0, vqvae.config.embedding_dim, grid, grid), np.float32), indices)
    return Samples(np.concatenate(images), np.concatenate(latents), indices)
