"""Small helpers every stage uses: seeding, device choice, eval mode, image conversions, image grids.

Dimension letters: B batch, C channels (3), H/W image height/width.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(preferred: str | None = None) -> torch.device:
    """Choose the device once, at the edge: an explicit name, else cuda, mps, cpu in that order."""
    name = preferred or os.environ.get("GALAXY_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float in [-1, 1], on the input's device."""
    x = images.permute(0, 3, 1, 2).float()  # (B, C, H, W)
    return x.div_(127.5).sub_(1.0)


def unit_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [-1, 1] -> (B, H, W, C) uint8 numpy (rounded, clipped)."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)


def image_grid(images: np.ndarray, nrow: int, pad: int = 2, value: int = 0) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one (rows*H', nrow*W', C) array, row-major."""
    n, h, w, c = images.shape
    rows = (n + nrow - 1) // nrow
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), value, dtype=images.dtype)
    for i in range(n):
        r, q = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def rng_state() -> dict[str, Any]:
    """Global torch RNG state(s) as tensors (CPU, and CUDA when it is in use)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's previous mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def as_tensor(array: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A tensor on ``device`` (no copy when it already is one there)."""
    if isinstance(array, torch.Tensor):
        return array.to(device)
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. a memory-mapped file: torch wants memory it may write
        array = array.copy()
    return torch.from_numpy(array).to(device)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter."""
    return next(module.parameters()).device
