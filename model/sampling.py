"""Generate galaxies (LlamaGen's generate.py): filters, guidance, cached generation, decoding to images.

``generate`` samples token sequences from a ``ConditionalPrior`` with a key/value cache (one token of work
per step) and the conditional and unconditional halves of classifier-free guidance in one batch;
``sample`` does it for any mix of class labels and unconditional rows and decodes the tokens with the
VQ-VAE into images, quantized latents and index grids.

A prior with a numeric condition (``PriorConfig.condition``, e.g. redshift) also takes one value per row
(NaN = none). Guidance contrasts each row's condition with the fully null one, (null class, null value):
(class, z) for the pair, (class, null z) for the class alone, (null class, z) for z alone.

Dimension letters: N images, B batch rows, T tokens (= h * w), K vocabulary, h/w latent grid,
D embedding dim, S image side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from model import pose
from model.errors import UserError
from model.prior import ConditionalPrior
from model.transformer import KVCache
from model.utils import evaluating, module_device, unit_to_uint8
from model.vqvae import VQVAE

UNCONDITIONAL = -1  # a label meaning "no class" (the prior's null class)
#: Nucleus mass of ``sample`` (the CLI, the registered sampler, the flow's grids and evaluation) unless asked
#: otherwise: cutting each step's least likely codes (the last 10 % of the mass) stops the rare wrong codes that
#: plain sampling draws now and then, and that the next steps build on. Issue 12, the demo sampler of
#: ``6dfcdeb`` judged by its judge: cfg-3 balanced accuracy 0.614 [0.578, 0.644] vs 0.530 [0.498, 0.562] at 1.0,
#: and FD to the test split 17.9 vs 20.8 (closer to the real images, not just surer). ``generate`` keeps 1.0.
DEFAULT_TOP_P = 0.9


# --------------------------------------------------------------------------------------------------
# filters and guidance


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k largest logits per row (ties at the k-th kept), set the rest to -inf; 0 disables."""
    if top_k <= 0 or top_k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches top_p; 1 disables."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., K)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= top_p  # the most likely token always has mass_before 0: kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sampling_dtype_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32 at least (bf16/fp16 are promoted; float64 kept) before guidance and sampling."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: uncond + cfg_scale * (cond - uncond); cfg_scale one value or (N, 1) per row."""
    return uncond + cfg_scale * (cond - uncond)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(N, K) logits -> (N, 1) sampled ids: temperature (one, or (N, 1) per row), top-k, top-p, softmax, one
    multinomial draw."""
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    probs = F.softmax(logits, dim=-1)  # (N, K)
    return torch.multinomial(probs, 1, generator=generator)  # (N, 1)


def per_row(name: str, value: float | Sequence[float] | np.ndarray | torch.Tensor, n: int) -> list[float]:
    """One value, or one per row, as a list of floats (one element for one value)."""
    values = np.asarray(value.cpu() if torch.is_tensor(value) else value, dtype=np.float64).reshape(-1)
    if values.size not in (1, n):
        raise UserError("sampling", f"{name} must be one value or one per row ({n}), got {values.size}")
    return values.tolist()


def _row_tensor(values: list[float], device: torch.device) -> float | torch.Tensor:
    """``per_row``'s list as a python float when every row has the same value (the scalar's exact arithmetic),
    else an (n, 1) float32 column."""
    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, dtype=torch.float32, device=device).reshape(-1, 1)


def check_sampling_args(
    n: int,
    num_classes: int,
    labels: torch.Tensor | None,
    cfg_scale: float | Sequence[float],
    temperature: float | Sequence[float],
    top_k: int,
    top_p: float,
) -> None:
    """Raise a UserError naming the first bad sampling argument. ``cfg_scale`` and ``temperature`` may be one
    value or one per row (n,)."""
    if int(n) < 1:
        raise UserError("sampling", f"n must be >= 1, got {n}")
    temperatures, scales = per_row("temperature", temperature, n), per_row("cfg_scale", cfg_scale, n)
    for t in temperatures:
        if not t > 0:
            raise UserError("sampling", f"temperature must be > 0, got {t}")
    if int(top_k) < 0:
        raise UserError("sampling", f"top_k must be >= 0 (0 disables), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise UserError("sampling", f"top_p must be in (0, 1] (1 disables), got {top_p}")
    for c in scales:
        if not (c >= 0 and math.isfinite(c)):
            raise UserError("sampling", f"cfg_scale must be a finite number >= 0, got {c}")
    if labels is not None:
        if labels.shape != (n,):
            raise UserError("sampling", f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
            raise UserError(
                "sampling",
                f"labels must be in [0, {num_classes - 1}] (or {num_classes} for the null class), "
                f"got values in [{int(labels.min())}, {int(labels.max())}]",
            )


def check_condition_values(
    prior: ConditionalPrior, values: np.ndarray | Sequence[float] | None, where: str | None = None
) -> None:
    """Raise a UserError (naming ``where``, by default the condition) when condition values are given to a prior
    without a condition, or lie outside the range it was trained on (NaN means "no value", always allowed)."""
    if values is None:
        return
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    given = values[~np.isnan(values)]
    if not given.size:
        return
    config = prior.config
    if config.condition is None:
        raise UserError(where or "sampling", f"this prior was trained without a condition: it takes no {given[0]:g}")
    lo, hi = config.condition_range
    bad = given[(given < lo) | (given > hi)]
    if bad.size:
        raise UserError(where or config.condition, f"{bad[0]:g} is outside the trained range [{lo:.4g}, {hi:.4g}]")


# --------------------------------------------------------------------------------------------------
# cached generation


@torch.no_grad()
def generate(
    prior: ConditionalPrior,
    n: int,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    condition_values: torch.Tensor | Sequence[float] | None = None,
    cfg_scale: float | Sequence[float] | torch.Tensor = 1.0,
    temperature: float | Sequence[float] | torch.Tensor = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Sample n token sequences from the prior -> (n, T) long; labels (n,) or None (null class), condition
    values (n,) (NaN = null) or None (all null; the only choice for a prior without a condition).

    Guided (a label or a value given, cfg_scale != 1): the conditional rows (label, value) and the
    unconditional rows (null class, null value) run as one batch of 2n and
    logits = uncond + cfg_scale * (cond - uncond). Each step feeds only the newest token through the
    layers, reading earlier keys/values from a cache. Runs in eval mode (the previous modes are restored).
    ``progress(i)`` is called with the number of tokens made so far. ``cfg_scale`` and ``temperature`` may be
    given per row (n,): rows of one batch sampled at several settings in one pass.
    """
    device = prior.token_emb.weight.device
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    check_sampling_args(n, prior.num_classes, labels, cfg_scale, temperature, top_k, top_p)
    if condition_values is not None:
        condition_values = torch.as_tensor(condition_values, dtype=torch.float64).reshape(-1).cpu()
        if condition_values.shape != (n,):
            raise UserError("sampling", f"condition values must have shape ({n},), got {tuple(condition_values.shape)}")
        check_condition_values(prior, condition_values.numpy())
        if torch.isnan(condition_values).all():
            condition_values = None  # all null: the same as none (and the only choice without a condition)
        else:
            condition_values = condition_values.to(device, prior.token_emb.weight.dtype)  # no float64 on MPS
    scales, temperatures = per_row("cfg_scale", cfg_scale, n), per_row("temperature", temperature, n)
    guided = (labels is not None or condition_values is not None) and any(c != 1.0 for c in scales)
    cfg_scale, temperature = _row_tensor(scales, device), _row_tensor(temperatures, device)
    null = torch.full((n,), prior.null_label, dtype=torch.long, device=device)
    batch_labels = null if labels is None else labels
    batch_values = condition_values
    if guided:  # (2n,): conditional rows first, then (null class, null value)
        batch_labels = torch.cat([batch_labels, null])
        if condition_values is not None:
            batch_values = torch.cat([condition_values, torch.full_like(condition_values, float("nan"))])
    B = batch_labels.size(0)

    with evaluating(prior):
        cache = KVCache(prior.config.layers, prior.config.max_len)
        cls = prior.start_embedding(batch_labels, batch_values, B)  # (B, 1, D)
        start = torch.cat([cls, prior.sos_token.expand(B, 1, -1)], dim=1)
        h = prior.hidden(start, 0, cache)[:, -1]  # (B, D) at SOS
        tokens = torch.empty(n, prior.seq_len, dtype=torch.long, device=device)
        for i in range(prior.seq_len):
            logits = sampling_dtype_logits(prior.head(h))  # (B, K)
            if guided:
                cond, uncond = logits.chunk(2)  # (n, K) each
                logits = guided_logits(cond, uncond, cfg_scale)
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            tokens[:, i] = nxt[:, 0]
            if progress is not None:
                progress(i + 1)
            if i + 1 < prior.seq_len:
                inp = nxt.repeat(2, 1) if guided else nxt  # (B, 1)
                h = prior.hidden(prior.token_emb(inp), 2 + i, cache)[:, -1]  # (B, D)
    return tokens


# --------------------------------------------------------------------------------------------------
# many labels, decoded to images


class Samples(NamedTuple):
    """What one call of ``sample`` returns, in the order of the requested labels."""

    images: np.ndarray  # (N, S, S, 3) uint8
    latents: np.ndarray  # (N, D, h, w) float32, the quantized latents z_q (a pose prior's: of the unturned image)
    indices: np.ndarray  # (N, h, w) int64 codebook indices (a pose prior's: in the canonical pose)


def check_compatible(prior: ConditionalPrior, vqvae: VQVAE) -> None:
    """The prior's vocabulary and grid must be the VQ-VAE's codebook and latent grid."""
    pc, vc = prior.config, vqvae.config
    if (pc.vocab_size, pc.grid_h, pc.grid_w) != (vc.codebook_size, vc.grid, vc.grid):
        raise UserError(
            "sampler",
            f"prior (K={pc.vocab_size}, grid {pc.grid_h}x{pc.grid_w}) does not match the VQ-VAE "
            f"(K={vc.codebook_size}, grid {vc.grid}x{vc.grid})",
        )


@torch.no_grad()
def sample(
    prior: ConditionalPrior,
    vqvae: VQVAE,
    labels: Sequence[int] | np.ndarray,
    *,
    condition_values: Sequence[float] | np.ndarray | None = None,
    cfg_scale: float | Sequence[float] | np.ndarray = 3.0,
    temperature: float | Sequence[float] | np.ndarray = 1.0,
    top_k: int = 0,
    top_p: float = DEFAULT_TOP_P,
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> Samples:
    """One image per entry of ``labels`` (class ids, or -1 for no class), seeded and batched.

    ``condition_values`` gives each row a value of the prior's condition (NaN: none); a row with a
    class or a value is guided, a row with neither is unconditional. ``cfg_scale`` and ``temperature`` are
    one value or one per entry of ``labels`` (a grid of settings in one pass: every step costs about the same
    for 20 rows as for 200). ``top_p`` defaults to ``DEFAULT_TOP_P`` (1 samples the prior's distribution as it
    is). ``progress(k)`` is called with the number of token steps done so far, summed over batches. A pose prior's
    images are each turned by a random symmetry of the square (``model.pose``): its codes are in the canonical pose.
    """
    check_compatible(prior, vqvae)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    bad = labels[(labels < UNCONDITIONAL) | (labels >= prior.num_classes)]
    if bad.size:
        raise UserError(
            "sampling", f"class label {int(bad[0])} is outside 0-{prior.num_classes - 1} (or -1 for unconditional)"
        )
    values = np.full(len(labels), np.nan) if condition_values is None else np.asarray(condition_values, np.float64)
    if values.shape != labels.shape:
        raise UserError("sampling", f"{values.size} condition values for {labels.size} labels")
    check_condition_values(prior, values)
    scales = np.broadcast_to(np.asarray(per_row("cfg_scale", cfg_scale, len(labels))), labels.shape)
    temperatures = np.broadcast_to(np.asarray(per_row("temperature", temperature, len(labels))), labels.shape)
    device = prior.token_emb.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    grids = np.zeros((len(labels), prior.config.grid_len), dtype=np.int64)
    steps_done = 0
    # conditional and unconditional requests are separate batches (a guided step needs both halves)
    for conditional in (True, False):
        rows = np.flatnonzero(((labels >= 0) | ~np.isnan(values)) == conditional)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]

            def step(i: int, _base: int = steps_done) -> None:
                if progress is not None:
                    progress(_base + i)

            out = generate(
                prior,
                len(chunk),
                torch.as_tensor(np.where(labels[chunk] >= 0, labels[chunk], prior.null_label), device=device)
                if conditional
                else None,
                condition_values=values[chunk] if conditional else None,
                cfg_scale=scales[chunk] if conditional else 1.0,
                temperature=temperatures[chunk],
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                progress=step,
            )
            grids[chunk] = prior.with_border(out, generator).cpu().numpy()  # a crop prior's border drawn here
            steps_done += prior.seq_len
    drawn = decode_tokens(vqvae, grids, batch_size=batch_size)
    if not prior.config.pose:
        return drawn
    # a pose prior draws galaxies in their canonical pose: each image is turned by a random symmetry, drawn
    # after every code so that the codes are those of the same seed without pose
    elements = torch.randint(0, pose.SYMMETRIES, (len(labels),), generator=generator, device=device)
    return drawn._replace(images=pose.turn(drawn.images, elements.cpu().numpy()))


@torch.no_grad()
def decode_tokens(vqvae: VQVAE, tokens: np.ndarray, batch_size: int = 256) -> Samples:
    """(N, T) token rows -> images, latents and index grids, decoded in eval mode."""
    grid = vqvae.config.grid
    device = module_device(vqvae)
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
        empty_latents = np.zeros((0, vqvae.config.embedding_dim, grid, grid), np.float32)
        return Samples(np.zeros((0, s, s, 3), np.uint8), empty_latents, indices)
    return Samples(np.concatenate(images), np.concatenate(latents), indices)
