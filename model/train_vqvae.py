"""Training loop, validation and reconstruction helpers for the VQ-VAE (framework-free).

Data stay one uint8 tensor (N, H, W, C) on the training device; each batch is indexed from it, augmented
with random flips / transposes (all 8 symmetries of the square, i.e. flips and 90-degree rotations) and
converted to floats in [-1, 1] on the device. Convolutions run channels-last (CPU and CUDA); on CUDA the
step also runs under bf16 autocast. Metrics go to ``log(metrics, epoch)``; a checkpoint is written after every epoch and a run
resumes from it bit-for-bit on CPU (model, optimizer, global RNG and batch-order generator restored).

Dimension letters: N images, B batch, H/W height/width, C channels, h/w latent grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from model.config import Config
from model.errors import UserError
from model.metrics import codebook_usage, psnr
from model.utils import pick_device, seed_everything, set_rng_state, uint8_to_unit, unit_to_uint8
from model.vqvae import (
    PRESETS,
    VQVAE,
    VQVAEConfig,
    evaluating,
    preset,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "evaluate_vqvae",
    "preset",
    "reconstruct_images",
    "train_vqvae",
]


@dataclass
class TrainConfig(Config):
    """Optimisation and runtime settings of one VQ-VAE training run."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 64  # images per optimizer step
    lr: float = 3e-4  # AdamW learning rate (constant)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 0.0  # max global gradient norm; 0 = no clipping
    seed: int = 0  # seeds model init, batch order and augmentation
    augment: bool = True  # random flips / 90-degree rotations of each training image
    bf16: bool = True  # bfloat16 autocast for the training step (CUDA only)
    channels_last: bool = True  # channels-last memory format on CUDA and CPU (faster convs on both)
    compile: bool = False  # torch.compile the training forward (checkpoints still hold the plain module)
    device: str | None = None  # "cuda", "mps", "cpu", or None: GALAXY_DEVICE env var, else best available
    eval_batch_size: int = 256  # images per validation forward (float32, eval mode)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0, weight_decay and grad_clip >= 0")


class TrainResult(NamedTuple):
    """The trained model (eval mode, contiguous format, on the training device), per-epoch metrics, last metrics."""

    model: VQVAE
    history: list[dict[str, float]]
    metrics: dict[str, float]


# ----------------------------------------------------------------------------------------------------------
# data helpers


def check_images(images: np.ndarray | torch.Tensor, config: VQVAEConfig, what: str) -> None:
    """Raise a UserError unless ``images`` is (N, S, S, C) uint8 with S = image_size and N >= 1."""
    shape = tuple(images.shape)
    dtype = str(images.dtype).replace("torch.", "")
    if len(shape) != 4 or shape[0] < 1:
        raise UserError(what, f"expected a non-empty (N, H, W, C) image array, got shape {shape}")
    if dtype != "uint8":
        raise UserError(what, f"expected uint8 images, got {dtype}")
    size, c = config.image_size, config.in_channels
    if shape[1:] != (size, size, c):
        raise UserError(what, f"images are {shape[1]}x{shape[2]}x{shape[3]}, the model expects {size}x{size}x{c}")


def _as_uint8_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """One (N, H, W, C) uint8 tensor on ``device`` (no copy when it already is one)."""
    if isinstance(images, torch.Tensor):
        return images.to(device)
    return torch.from_numpy(np.ascontiguousarray(images)).to(device)


def augment_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
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


# ----------------------------------------------------------------------------------------------------------
# evaluation


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_vqvae(
    model: VQVAE,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Eval-mode reconstruction MSE/PSNR in [-1, 1] units and codebook usage over all ``images`` (N, H, W, C) uint8.

    Returns dict(mse, psnr, utilisation, perplexity, effective_usage, indices (N, h, w) int64 numpy).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    sse, count, all_indices = 0.0, 0, []
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            chunk = _as_uint8_tensor(images[start : start + batch_size], device)  # (B, H, W, C)
            x = uint8_to_unit(chunk)  # (B, C, H, W)
            out = model(x)
            sse += float(((out.x_recon.float() - x) ** 2).sum(dtype=torch.float64))
            count += x.numel()
            all_indices.append(out.indices.cpu())
    indices = torch.cat(all_indices).numpy()  # (N, h, w)
    mse = sse / count
    usage = codebook_usage(indices, model.config.codebook_size)
    return {
        "mse": mse,
        "psnr": psnr(mse),
        "utilisation": usage.utilisation,
        "perplexity": usage.perplexity,
        "effective_usage": usage.effective_usage,
        "indices": indices,
    }


@torch.no_grad()
def reconstruct_images(
    model: VQVAE,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """(N, H, W, C) uint8 -> eval-mode reconstructions (N, H, W, C) uint8 (deterministic for a given model)."""
    device = torch.device(device) if device is not None else _model_device(model)
    out = []
    for start in range(0, len(images), batch_size):
        x = uint8_to_unit(_as_uint8_tensor(images[start : start + batch_size], device))  # (B, C, H, W)
        out.append(unit_to_uint8(model.reconstruct(x)))  # (B, H, W, C)
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------------------------
# training


def _resume(
    ckpt: dict[str, Any],
    path: Path,
    model: VQVAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[int, list[dict[str, float]]]:
    """Load model, optimizer and RNG state from a training checkpoint; return (epochs done, history)."""
    if ckpt["model_config"] != model.config.to_dict():
        raise UserError(path, "checkpoint was trained with a different model config; delete it or pass resume=False")
    if ckpt.get("optimizer") is None or "data_rng" not in ckpt:
        raise UserError(path, "not a training checkpoint (no optimizer / data RNG state)")
    model.load_state_dict(ckpt["model"], strict=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    generator.set_state(ckpt["data_rng"])
    return int(ckpt["epoch"]), list(ckpt.get("history", []))


def train_vqvae(
    model_config: VQVAEConfig,
    train_config: TrainConfig,
    train_images: np.ndarray | torch.Tensor,
    val_images: np.ndarray | torch.Tensor,
    *,
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> TrainResult:
    """Train a VQ-VAE on (N, H, W, C) uint8 images; loss = MSE(x_recon, x) + vq loss, AdamW.

    After each epoch (1-based ``epoch``): validate in eval mode, write the checkpoint (if a path is given),
    call ``log(metrics, epoch)``, then ``on_epoch_end(epoch, metrics)``: a True return stops training, an
    exception (e.g. an Optuna prune) propagates. ``progress(done_steps, total_steps)`` is called after each
    optimizer step, counted over the whole run. With ``resume`` and an existing checkpoint, training
    continues from its epoch (the checkpoint's model config must match; the given train config is used).
    """
    check_images(train_images, model_config, "train_images")
    check_images(val_images, model_config, "val_images")
    tc = train_config
    device = pick_device(tc.device)
    on_cuda = device.type == "cuda"
    amp = tc.bf16 and on_cuda
    channels_last = tc.channels_last and device.type in ("cuda", "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    seed_everything(tc.seed)
    model = VQVAE(model_config).to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    generator = torch.Generator().manual_seed(tc.seed)  # batch order and augmentation (CPU)

    start_epoch, history = 0, []
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if checkpoint_path is not None and resume and checkpoint_path.exists():
        ckpt = read_checkpoint(checkpoint_path, map_location="cpu")
        start_epoch, history = _resume(ckpt, checkpoint_path, model, optimizer, generator)
        del ckpt

    data = _as_uint8_tensor(train_images, device)  # (N, H, W, C) uint8, resident on the device
    val_data = _as_uint8_tensor(val_images, device)
    n = data.shape[0]
    batch_size = min(tc.batch_size, n)
    steps_per_epoch = n // batch_size  # last partial batch dropped; the shuffle changes every epoch
    total_steps = steps_per_epoch * tc.epochs
    step_model = torch.compile(model) if tc.compile else model

    for epoch in range(start_epoch, tc.epochs):
        model.train()
        perm = torch.randperm(n, generator=generator).to(device)  # (N,)
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, recon, vq
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            batch = data[perm[i * batch_size : (i + 1) * batch_size]]  # (B, H, W, C) uint8
            if tc.augment:
                batch = augment_batch(batch, generator)
            x = uint8_to_unit(batch).contiguous(memory_format=memory_format)  # (B, C, H, W) in [-1, 1]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = step_model(x)
            recon = F.mse_loss(out.x_recon.float(), x)
            loss = recon + out.vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            sums += torch.stack([loss.detach(), recon.detach(), out.vq_loss.detach()]).double()
            if progress is not None:
                progress(epoch * steps_per_epoch + i + 1, total_steps)
        train_sums = (sums / steps_per_epoch).tolist()  # syncs the device
        train_time = time.perf_counter() - t0

        val = evaluate_vqvae(model, val_data, tc.eval_batch_size, device)
        metrics = {
            "epoch": float(epoch + 1),
            "train_loss": train_sums[0],
            "train_recon": train_sums[1],
            "train_vq": train_sums[2],
            "val_mse": val["mse"],
            "val_psnr": val["psnr"],
            "val_utilisation": val["utilisation"],
            "val_perplexity": val["perplexity"],
            "val_effective_usage": val["effective_usage"],
            "lr": float(optimizer.param_groups[0]["lr"]),
            "train_time_s": train_time,
            "epoch_time_s": time.perf_counter() - t0,
            "images_per_s": steps_per_epoch * batch_size / train_time,
        }
        history.append(metrics)
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                epoch + 1,
                tc,
                extra={"data_rng": generator.get_state(), "history": history},
            )
        log(metrics, epoch + 1)
        if on_epoch_end is not None and on_epoch_end(epoch + 1, metrics):
            break

    model.to(memory_format=torch.contiguous_format)  # computes like a model rebuilt by load_vqvae
    model.eval()
    return TrainResult(model, history, dict(history[-1]) if history else {})
