"""Training loop, validation and reconstruction helpers for the VQ-VAE (framework-free).

Data stay one uint8 tensor (N, H, W, C) on the training device; each batch is indexed from it, augmented
with random flips / transposes (all 8 symmetries of the square, i.e. flips and 90-degree rotations) and
converted to floats in [-1, 1] on the device. Convolutions run channels-last (CPU and CUDA); on CUDA the
step also runs under bf16 autocast. Metrics and checkpoints go through ``model.training.Hooks``; a run
resumes from its checkpoint bit-for-bit on CPU (model, optimizer, global RNG and batch-order generator restored).

Dimension letters: N images, B batch, H/W height/width, C channels, h/w latent grid.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import restore_training
from model.metrics import codebook_usage, psnr
from model.training import Hooks, TrainResult, augment_square, check_images, cosine_lr
from model.utils import as_tensor, evaluating, module_device, pick_device, seed_everything, uint8_to_unit, unit_to_uint8
from model.vqvae import VQVAE, VQVAEConfig

# ----------------------------------------------------------------------------------------------------------
# evaluation


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
    device = torch.device(device) if device is not None else module_device(model)
    sse, count, all_indices = 0.0, 0, []
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            chunk = as_tensor(images[start : start + batch_size], device)  # (B, H, W, C)
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
    device = torch.device(device) if device is not None else module_device(model)
    out = []
    for start in range(0, len(images), batch_size):
        x = uint8_to_unit(as_tensor(images[start : start + batch_size], device))  # (B, C, H, W)
        out.append(unit_to_uint8(model.reconstruct(x)))  # (B, H, W, C)
    return np.concatenate(out)


@torch.no_grad()
def tokenize_images(model: VQVAE, images: np.ndarray, batch_size: int = 256, progress=None) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, T) code indices (row-major h, w), eval mode (the codebook never moves).

    ``progress(n)`` is called with the number of images done in each batch.
    """
    device = module_device(model)
    dtype = np.uint16 if model.config.codebook_size <= 65536 else np.int32
    out = np.empty((len(images), model.config.seq_len), dtype=dtype)
    for start in range(0, len(images), batch_size):
        x = uint8_to_unit(as_tensor(np.asarray(images[start : start + batch_size]), device))  # (B, 3, S, S)
        out[start : start + len(x)] = model.tokenize(x).reshape(len(x), -1).cpu().numpy()  # (B, h*w)
        if progress:
            progress(len(x))
    return out


# ----------------------------------------------------------------------------------------------------------
# training


def train_vqvae(
    config: VQVAEConfig,
    train_images: np.ndarray | torch.Tensor,
    val_images: np.ndarray | torch.Tensor,
    hooks: Hooks = Hooks(),
) -> TrainResult:
    """Train a VQ-VAE on (N, H, W, C) uint8 images; loss = MSE(x_recon, x) + vq loss, AdamW whose lr decays
    (cosine) to lr * min_lr_ratio by the end of training.

    After each epoch (1-based): validate in eval mode, then ``hooks.end_epoch`` (checkpoint, log, callback;
    an Optuna prune raised there propagates). With a checkpoint to resume, training continues from its
    epoch (its architecture must match; the given training settings are used).
    """
    check_images(train_images, config.image_size, "train_images", config.in_channels)
    check_images(val_images, config.image_size, "val_images", config.in_channels)
    tc = config
    device = pick_device(tc.device)
    on_cuda = device.type == "cuda"
    amp = tc.bf16 and on_cuda
    channels_last = tc.channels_last and device.type in ("cuda", "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    seed_everything(tc.seed)
    model = VQVAE(config).to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    generator = torch.Generator().manual_seed(tc.seed)  # batch order and augmentation (CPU)

    start_epoch, history = 0, []
    ckpt = hooks.checkpoint(VQVAE.KIND)
    if ckpt is not None:
        start_epoch, history = restore_training(ckpt, hooks.checkpoint_path, model, optimizer), list(ckpt["history"])
        generator.set_state(ckpt["data_rng"])
        del ckpt

    data = as_tensor(train_images, device)  # (N, H, W, C) uint8, resident on the device
    val_data = as_tensor(val_images, device)
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
                batch = augment_square(batch, generator)
            x = uint8_to_unit(batch).contiguous(memory_format=memory_format)  # (B, C, H, W) in [-1, 1]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = step_model(x)
            recon = F.mse_loss(out.x_recon.float(), x)
            loss = recon + out.vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(epoch * steps_per_epoch + i, total_steps, tc.lr, tc.min_lr_ratio)
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            sums += torch.stack([loss.detach(), recon.detach(), out.vq_loss.detach()]).double()
            hooks.step(epoch * steps_per_epoch + i + 1, total_steps)
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
        state = dict(optimizer=optimizer, history=history, data_rng=generator.get_state())
        if hooks.end_epoch(model, epoch + 1, metrics, **state):
            break

    model.to(memory_format=torch.contiguous_format)  # computes like a model rebuilt by load_model
    model.eval()
    return TrainResult(model, history, dict(history[-1]) if history else {})
