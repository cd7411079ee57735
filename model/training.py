"""What the three training loops share: hooks, the result type, image checks, the square-symmetry augmentation
and the cosine learning-rate schedule.

Every loop (``train_vqvae``, ``train_prior``, ``train_judge``) takes its model's config, its data and one
``Hooks``: how it reports (``log(metrics, step)``, ``progress(done_steps, total_steps)``), where it
checkpoints after each epoch and whether it resumes from there, and what runs after each epoch
(``on_epoch_end(epoch, metrics)``: a True return stops training, an exception propagates). It returns a
``TrainResult``. Tasks pass MLflow-backed hooks, tests plain lists.

Dimension letters: N images, B batch, H/W height/width, C channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from model.checkpoint import read_checkpoint, save_checkpoint
from model.errors import UserError

Log = Callable[[dict[str, float], int], None]  # log(metrics, step)
Progress = Callable[[int, int], None]  # progress(done_steps, total_steps)


EpochEnd = Callable[[int, dict[str, float]], "bool | None"]  # on_epoch_end(epoch, metrics) -> stop?


def no_log(metrics: dict[str, float], step: int) -> None:
    """The default ``log`` callback: drop the metrics."""


@dataclass
class Hooks:
    """How a training loop reports, checkpoints and resumes (see the module docstring)."""

    log: Log = no_log
    progress: Progress | None = None
    on_epoch_end: EpochEnd | None = None
    checkpoint_path: str | Path | None = None
    resume: bool = True

    def step(self, done: int, total: int) -> None:
        """After each optimizer step."""
        if self.progress is not None:
            self.progress(done, total)

    def checkpoint(self, kind: str) -> dict[str, Any] | None:
        """The checkpoint to resume from, if there is one and resuming is asked for."""
        path = self.checkpoint_path
        if path is None or not self.resume or not Path(path).is_file():
            return None
        return read_checkpoint(path, kind)

    def end_epoch(self, model: nn.Module, epoch: int, metrics: dict[str, float], **state: Any) -> bool:
        """Checkpoint (model and ``state``), log the metrics, then ``on_epoch_end``; True means stop."""
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, model, epoch=epoch, **state)
        self.log(metrics, epoch)
        return bool(self.on_epoch_end(epoch, metrics)) if self.on_epoch_end is not None else False


class TrainResult(NamedTuple):
    """What every training loop returns."""

    model: nn.Module  # the trained model, eval mode, on the training device
    history: list[dict[str, float]]  # one metrics dict per epoch
    metrics: dict[str, float]  # the metrics the model is reported by (the last or the best epoch)


def check_images(images: np.ndarray | torch.Tensor, size: int, what: str, channels: int = 3) -> None:
    """UserError unless ``images`` is a non-empty (N, size, size, channels) uint8 array."""
    shape = tuple(images.shape)
    dtype = str(images.dtype).replace("torch.", "")
    if len(shape) != 4 or shape[0] < 1:
        raise UserError(what, f"expected a non-empty (N, H, W, C) image array, got shape {shape}")
    if dtype != "uint8":
        raise UserError(what, f"expected uint8 images, got {dtype}")
    if shape[1:] != (size, size, channels):
        raise UserError(
            what, f"images are {shape[1]}x{shape[2]}x{shape[3]}, the model expects {size}x{size}x{channels}"
        )


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs on native hardware on ``device``: CUDA, or a CPU with AMX tiles (there oneDNN
    runs bf16 convolutions and matmuls at about 1.7x the fp32 speed of the judge's step on 2 cores,
    benchmarks/judge_speed.py). Elsewhere a CPU would emulate bf16, slower than fp32."""
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # a private probe: absent from some builds
    return device.type == "cpu" and amx is not None and bool(amx())


def cosine_lr(step: int, total_steps: int, lr: float, min_ratio: float, warmup: int = 0) -> float:
    """The learning rate of 0-based ``step``: linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to
    ``lr * min_ratio`` at ``total_steps`` (and held there); ``min_ratio = 1`` is a constant ``lr``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(max(step - warmup, 0) / max(total_steps - warmup, 1), 1.0)
    floor = lr * min_ratio
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def augment_square(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, H, W, C) -> same, each image under one of the 8 square symmetries (flips, 90-degree rotations).

    Horizontal flip, vertical flip and transpose, each on with probability 1/2, generate the dihedral group
    of the square uniformly; the choices come from ``generator`` (a CPU generator) so runs are reproducible.
    """
    b, h, w, _ = batch.shape
    if h != w:
        raise ValueError(f"augmentation needs square images, got {h}x{w}")
    flips = torch.rand(3, b, generator=generator) < 0.5  # (3, B): flip W, flip H, transpose
    flips = flips.to(batch.device).view(3, b, 1, 1, 1)
    batch = torch.where(flips[0], batch.flip(2), batch)
    batch = torch.where(flips[1], batch.flip(1), batch)
    return torch.where(flips[2], batch.transpose(1, 2), batch)
