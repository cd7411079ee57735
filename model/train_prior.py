"""Training loop of the conditional prior on cached VQ-VAE token sequences (framework-free).

Metrics go to ``log(metrics, step)``: per epoch (step = epoch number, 1-based) the train loss, the
validation NLL in bits per token (conditional and unconditional), the unigram entropy of the training
codes (the baseline a prior must beat) and throughput; every ``log_every`` optimiser steps
``step_loss`` and ``lr`` (step = global step). A checkpoint is written after every epoch and training
resumes from it.

Dimension letters: N sequences, B batch, T tokens per sequence, K vocabulary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from model.errors import UserError
from model.metrics import code_counts, entropy_nats
from model.prior import ConditionalPrior, PriorConfig, PriorTrainConfig, load_prior, save_prior
from model.utils import pick_device, rng_state, seed_everything, set_rng_state

LN2 = math.log(2.0)


@dataclass
class PriorTrainResult:
    """What train_prior returns."""

    model: ConditionalPrior  # trained prior (uncompiled, eval mode, on the training device)
    history: list[dict[str, float]]  # one metrics dict per epoch
    final: dict[str, float]  # the last epoch's metrics


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of logits (B, T, K) against tokens (B, T)."""
    return F.cross_entropy(rearrange(logits, "b t k -> (b t) k").float(), rearrange(tokens, "b t -> (b t)"))


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked, else a no-op context."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


@torch.no_grad()
def evaluate_nll(
    model: ConditionalPrior,
    tokens: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    batch_size: int = 128,
    bf16: bool = False,
) -> float:
    """Mean NLL in nats per token of tokens (N, T) given labels (N,) (None: unconditional), eval mode."""
    was_training = model.training
    model.eval()
    device = model.token_emb.weight.device
    total, count = 0.0, 0
    try:
        for i in range(0, tokens.size(0), batch_size):
            x = tokens[i : i + batch_size].to(device, torch.long)  # (B, T)
            y = labels[i : i + batch_size].to(device, torch.long) if labels is not None else None
            with _autocast(device, bf16):
                logits = model(x, y)  # (B, T, K)
            total += float(next_token_loss(logits, x)) * x.numel()
            count += x.numel()
    finally:
        model.train(was_training)
    return total / max(count, 1)


def configure_optimizer(model: ConditionalPrior, train_config: PriorTrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (dim >= 2), none on norms, biases, SOS, null."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied head appears once
        (decay if p.dim() >= 2 and name not in ("sos_token", "null_class_emb") else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": train_config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=train_config.lr, betas=(0.9, 0.95))


def lr_at(step: int, total_steps: int, train_config: PriorTrainConfig) -> float:
    """Linear warm-up to lr, then cosine decay to lr * min_lr_ratio at total_steps."""
    tc = train_config
    if tc.warmup > 0 and step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    span = max(total_steps - tc.warmup, 1)
    progress = min(max(step - tc.warmup, 0) / span, 1.0)
    floor = tc.lr * tc.min_lr_ratio
    return floor + (tc.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_split(name: str, tokens: np.ndarray, labels: np.ndarray, config: PriorConfig) -> None:
    """ValueError naming the split when its tokens/labels do not fit the config."""
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    if tokens.ndim != 2 or tokens.shape[1] != config.seq_len:
        raise ValueError(f"{name} tokens must be (N, {config.seq_len}), got {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{name} tokens must be integers, got {tokens.dtype}")
    if labels.shape != (tokens.shape[0],):
        raise ValueError(f"{name} labels must be ({tokens.shape[0]},), got {labels.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= config.vocab_size):
        got = f"[{tokens.min()}, {tokens.max()}]"
        raise ValueError(f"{name} tokens must be in [0, {config.vocab_size}), got {got}")
    if labels.size and (labels.min() < 0 or labels.max() >= config.num_classes):
        got = f"[{labels.min()}, {labels.max()}]"
        raise ValueError(f"{name} labels must be in [0, {config.num_classes}), got {got}")


def train_prior(
    config: PriorConfig,
    train_config: PriorTrainConfig,
    train_tokens: np.ndarray,
    train_labels: np.ndarray,
    val_tokens: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    *,
    log: Callable[[dict[str, float], int], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> PriorTrainResult:
    """Train a ConditionalPrior on tokens (N, T) with labels (N,); checkpoint each epoch; resume if asked.

    ``progress(step, total_steps)`` is called after each optimiser step; ``on_epoch_end(epoch, metrics)`` after
    each epoch's checkpoint is written (a True return stops training).
    """
    tc = train_config
    log = log or (lambda metrics, step: None)
    _check_split("train", train_tokens, train_labels, config)
    has_val = val_tokens is not None and val_labels is not None and len(val_tokens) > 0
    if has_val:
        _check_split("val", val_tokens, val_labels, config)
    device = pick_device(tc.device)
    seed_everything(tc.seed)

    x_train = torch.from_numpy(np.asarray(train_tokens, dtype=np.int64)).to(device)  # (N, T)
    y_train = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(device)  # (N,)
    if has_val:
        x_val = torch.from_numpy(np.asarray(val_tokens, dtype=np.int64)).to(device)
        y_val = torch.from_numpy(np.asarray(val_labels, dtype=np.int64)).to(device)
    unigram_bits = entropy_nats(code_counts(np.asarray(train_tokens), config.vocab_size)) / LN2

    model = ConditionalPrior(config).to(device)
    optimizer = configure_optimizer(model, tc)
    n = x_train.size(0)
    steps_per_epoch = max(n // tc.batch_size, 1)  # last partial batch dropped (full batches only)
    total_steps = steps_per_epoch * tc.epochs
    history: list[dict[str, float]] = []
    epoch0, step = 0, 0

    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt_path is not None and resume and ckpt_path.is_file():
        loaded, ckpt = load_prior(ckpt_path)
        if ckpt["model_config"] != config.to_dict():
            raise UserError(ckpt_path, "holds a prior with a different config; delete it or pass resume=False")
        model.load_state_dict(loaded.state_dict(), strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        epoch0, step = int(ckpt["epoch"]), int(ckpt["step"])
        history = [dict(h) for h in ckpt.get("history", [])]

    for epoch in range(epoch0, tc.epochs):
        model.train()
        shuffle = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)  # reproducible across resumes
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum, t0 = torch.zeros((), device=device), time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * tc.batch_size : (b + 1) * tc.batch_size]
            x, y = x_train[idx], y_train[idx]  # (B, T), (B,)
            lr = lr_at(step, total_steps, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device, tc.bf16):
                logits = model(x, y)  # (B, T, K)
            loss = next_token_loss(logits, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            step += 1
            loss_sum += loss.detach()  # summed on the device: no sync per step
            if tc.log_every and step % tc.log_every == 0:
                log({"step_loss": float(loss.detach()), "lr": lr}, step)
            if progress is not None:
                progress(step, total_steps)
        train_loss = float(loss_sum) / steps_per_epoch  # syncs the device before the clock is read
        train_time = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"prior training loss became {train_loss} in epoch {epoch + 1}")
        metrics = {
            "epoch": float(epoch + 1),
            "train_loss": train_loss,
            "train_bits_per_token": train_loss / LN2,
            "unigram_bits_per_token": unigram_bits,
            "tokens_per_s": steps_per_epoch * tc.batch_size * config.seq_len / max(train_time, 1e-9),
            "epoch_time_s": train_time,
            "lr": lr_at(step - 1, total_steps, tc),
        }
        if has_val:
            kw = dict(batch_size=tc.eval_batch_size, bf16=tc.bf16)
            metrics["val_bits_per_token"] = evaluate_nll(model, x_val, y_val, **kw) / LN2
            metrics["val_bits_per_token_uncond"] = evaluate_nll(model, x_val, None, **kw) / LN2
        history.append(metrics)
        log(metrics, epoch + 1)
        if ckpt_path is not None:
            save_prior(
                ckpt_path,
                model,
                train_config=tc.to_dict(),
                epoch=epoch + 1,
                step=step,
                optimizer=optimizer.state_dict(),
                rng=rng_state(),
                history=history,
            )
        if on_epoch_end is not None and on_epoch_end(epoch + 1, metrics):
            break

    model.eval()
    return PriorTrainResult(model=model, history=history, final=dict(history[-1]) if history else {})
