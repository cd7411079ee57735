"""Small helpers every stage uses: seeding, device choice, image conversions, image grids.

Dimension letters: B batch, C channels (3), H/W image height/width.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.errors import UserError


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


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) of a {'model', 'model_config', ...} checkpoint; bad files are a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(path, f"{what} checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise UserError(path, f"not a readable checkpoint ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise UserError(path, f"not a {what} checkpoint (no 'model' / 'model_config')")
    return ckpt
