"""The one checkpoint format of the three models, and its save/load pair.

A checkpoint is a dict of tensors and plain values, written atomically and read with ``weights_only=True``:

    {"kind": "vqvae" | "prior" | "judge", "config": Config.to_dict(), "model": state_dict,
     "optimizer": state_dict | None, "epoch": int, "history": [metrics per epoch], "rng": {...}, ...extra}

``save_checkpoint`` stores the uncompiled module's weights; ``load_model`` rebuilds the model from the stored
config (the model class names its config class and kind) and loads the weights strictly.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from model.errors import UserError
from model.utils import rng_state, set_rng_state

M = TypeVar("M", bound=nn.Module)


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


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    history: list[dict[str, float]] | tuple = (),
    **extra: Any,
) -> None:
    """Write the model (its ``KIND`` and ``config``), optimizer, epoch, history, global RNG and ``extra``."""
    model = getattr(model, "_orig_mod", model)  # the uncompiled module
    atomic_save(
        {
            "kind": model.KIND,
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "epoch": int(epoch),
            "history": [dict(h) for h in history],
            "rng": rng_state(),
            **extra,
        },
        path,
    )


def read_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``; a missing, unreadable or foreign file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(path, f"{kind} checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise UserError(path, f"not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(path, f"not a {kind} checkpoint (no 'model' / 'config')")
    if ckpt.get("kind") != kind:
        raise UserError(path, f"is a {ckpt.get('kind')} checkpoint, not a {kind} one")
    return ckpt


def load_model(
    path: str | Path, model_cls: type[M], map_location: str | torch.device = "cpu"
) -> tuple[M, dict[str, Any]]:
    """Rebuild ``model_cls`` from a checkpoint's config, load its weights strictly; (model in eval mode, ckpt)."""
    ckpt = read_checkpoint(path, model_cls.KIND, map_location)
    model = model_cls(model_cls.CONFIG.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    return model.to(map_location).eval(), ckpt


def restore_training(ckpt: dict[str, Any], path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load weights, optimizer and global RNG of a training checkpoint into a fresh run; returns epochs done.

    The checkpoint's architecture must be the model's (training settings such as the epoch count may differ).
    """
    stored = type(model.config).from_dict(ckpt["config"])
    if stored.architecture() != model.config.architecture():
        raise UserError(path, f"holds a {ckpt['kind']} with a different architecture; delete it to start again")
    if ckpt.get("optimizer") is None:
        raise UserError(path, "not a training checkpoint (no optimizer state)")
    model.load_state_dict(ckpt["model"], strict=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"])
