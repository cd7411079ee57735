"""Training loop of the conditional prior on cached VQ-VAE token sequences (framework-free).

Metrics go to ``hooks.log(metrics, step)``: per epoch (step = epoch number, 1-based) the train loss, the
validation NLL in bits per token given the condition(s) (after the last epoch also unconditional), the
unigram entropy of the training codes (the baseline a prior must beat) and throughput; every ``log_every``
optimiser steps ``step_loss`` and ``lr`` (step = global step). A checkpoint is written after every epoch and training
resumes from it.

A prior with a numeric condition (``PriorConfig.condition``) trains on one value per sequence beside the
label (NaN where unknown); its ``condition_range`` is set from the training values when not given
(``condition_range``), and the last epoch's validation also reports the NLL given the class alone and the value
alone.

Dimension letters: N sequences, B batch, T tokens per sequence, K vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from model.checkpoint import restore_training
from model.errors import UserError
from model.metrics import code_counts, entropy_nats
from model.prior import ConditionalPrior, PriorConfig
from model.training import Hooks, TrainResult, cosine_lr
from model.utils import evaluating, module_device, pick_device, seed_everything

LN2 = math.log(2.0)
CONDITION_PERCENTILES = (0.5, 99.5)  # the robust range of a condition: one outlier must not squash the rest
NOT_COLUMNS = ("labels", "split")  # 1-D arrays of a prepared folder that are not numeric properties


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of logits (B, T, K) against tokens (B, T)."""
    return F.cross_entropy(rearrange(logits, "b t k -> (b t) k").float(), rearrange(tokens, "b t -> (b t)"))


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked, else a no-op context."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


# --------------------------------------------------------------------------------------------------
# the condition column


def numeric_columns(root: str | Path, n: int) -> list[str]:
    """Names of the numeric per-image columns of a prepared folder: its 1-D float ``<name>.npy`` of length n."""
    names = []
    for path in sorted(Path(root).glob("*.npy")):
        if path.stem in NOT_COLUMNS:
            continue
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            continue
        if array.shape == (n,) and np.issubdtype(array.dtype, np.floating):
            names.append(path.stem)
    return names


def read_condition_column(root: str | Path, name: str, n: int) -> np.ndarray:
    """The (n,) float32 column ``name`` of a prepared folder (NaN where unknown); an unknown name is a UserError."""
    available = numeric_columns(root, n)
    if name not in available:
        listed = ", ".join(available) or "none"
        raise UserError("condition", f"unknown column {name!r} in {root} (its numeric columns: {listed})")
    return np.load(Path(root) / f"{name}.npy").astype(np.float32)


def condition_range(values: np.ndarray, name: str = "condition") -> tuple[float, float]:
    """(lo, hi): the 0.5th and 99.5th percentiles of the finite values; too few or constant values are a UserError."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        raise UserError(name, f"has {finite.size} known values in the training split: too few to condition on")
    lo, hi = (float(v) for v in np.percentile(finite, CONDITION_PERCENTILES))
    if not lo < hi:
        raise UserError(name, f"has no spread in the training split (every known value is {lo:g})")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# training


@torch.no_grad()
def evaluate_nll(
    model: ConditionalPrior,
    tokens: torch.Tensor,
    labels: torch.Tensor | None,
    condition_values: torch.Tensor | None = None,
    *,
    batch_size: int = 128,
    bf16: bool = False,
) -> float:
    """Mean NLL in nats per token of tokens (N, T) given labels (N,) (None: null class) and condition values
    (N,) (NaN or None: null value), eval mode."""
    device = module_device(model)
    total, count = 0.0, 0
    with evaluating(model):
        for i in range(0, tokens.size(0), batch_size):
            x = tokens[i : i + batch_size].to(device, torch.long)  # (B, T)
            y = labels[i : i + batch_size].to(device, torch.long) if labels is not None else None
            v = condition_values[i : i + batch_size].to(device) if condition_values is not None else None
            with _autocast(device, bf16):
                logits = model(x, y, v)  # (B, T, K)
            total += float(next_token_loss(logits, x)) * x.numel()
            count += x.numel()
    return total / max(count, 1)


NO_DECAY = ("sos_token", "null_class_emb", "null_condition_emb")  # learned vectors, not matrices


def configure_optimizer(model: ConditionalPrior, config: PriorConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (dim >= 2), none on norms, biases, SOS, null vectors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied head appears once
        (decay if p.dim() >= 2 and name not in NO_DECAY else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def lr_at(step: int, total_steps: int, config: PriorConfig) -> float:
    """Linear warm-up to lr, then cosine decay to lr * min_lr_ratio at total_steps."""
    return cosine_lr(step, total_steps, config.lr, config.min_lr_ratio, config.warmup)


def _check_split(name: str, tokens: np.ndarray, labels: np.ndarray, config: PriorConfig) -> None:
    """UserError naming the split when its tokens/labels do not fit the config."""
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    if tokens.ndim != 2 or tokens.shape[1] != config.grid_len:
        raise UserError(name, f"tokens must be (N, {config.grid_len}), got {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise UserError(name, f"tokens must be integers, got {tokens.dtype}")
    if labels.shape != (tokens.shape[0],):
        raise UserError(name, f"labels must be ({tokens.shape[0]},), got {labels.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= config.vocab_size):
        got = f"[{tokens.min()}, {tokens.max()}]"
        raise UserError(name, f"tokens must be in [0, {config.vocab_size}), got {got}")
    if labels.size and (labels.min() < 0 or labels.max() >= config.num_classes):
        got = f"[{labels.min()}, {labels.max()}]"
        raise UserError(name, f"labels must be in [0, {config.num_classes}), got {got}")


def _check_values(name: str, values: np.ndarray | None, n: int, condition: str) -> None:
    """UserError naming the split when its condition values are missing or not (n,) numbers."""
    if values is None:
        raise UserError(name, f"the prior is conditioned on {condition!r}: give one value per sequence (NaN: unknown)")
    values = np.asarray(values)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.number):
        raise UserError(name, f"{condition} values must be ({n},) numbers, got {values.shape} {values.dtype}")


def _values_tensor(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N,) numbers -> (N,) float32 on the device; infinities become NaN (unknown)."""
    values = np.asarray(values, dtype=np.float32)
    return torch.from_numpy(np.where(np.isfinite(values), values, np.nan).astype(np.float32)).to(device)


def train_prior(
    config: PriorConfig,
    train_tokens: np.ndarray,
    train_labels: np.ndarray,
    val_tokens: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    hooks: Hooks = Hooks(),
    *,
    train_values: np.ndarray | None = None,
    val_values: np.ndarray | None = None,
) -> TrainResult:
    """Train a ConditionalPrior on whole code grids (N, grid_h * grid_w) with labels (N,); ``hooks.end_epoch``
    after each epoch. A prior with a ``crop`` learns the border's code frequencies from the training grids and
    models the central crop (bits/token count those tokens).

    A config with a ``condition`` also needs its values (N,) per split (NaN: unknown); a missing
    ``condition_range`` is set from the training values (the returned model's config holds it).
    Every ``log_every`` optimiser steps ``hooks.log`` also gets the step loss and learning rate.
    """
    _check_split("train", train_tokens, train_labels, config)
    has_val = val_tokens is not None and val_labels is not None and len(val_tokens) > 0
    if has_val:
        _check_split("val", val_tokens, val_labels, config)
    conditioned = config.condition is not None
    if conditioned:
        _check_values("train", train_values, len(train_tokens), config.condition)
        if has_val:
            _check_values("val", val_values, len(val_tokens), config.condition)
        if config.condition_range is None:
            config = dataclasses.replace(config, condition_range=condition_range(train_values, config.condition))
    tc = config
    device = pick_device(tc.device)
    seed_everything(tc.seed)

    x_train = torch.from_numpy(np.asarray(train_tokens, dtype=np.int64)).to(device)  # (N, grid_len)
    y_train = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(device)  # (N,)
    v_train = _values_tensor(train_values, device) if conditioned else None  # (N,) float32, NaN = unknown
    if has_val:
        x_val = torch.from_numpy(np.asarray(val_tokens, dtype=np.int64)).to(device)
        y_val = torch.from_numpy(np.asarray(val_labels, dtype=np.int64)).to(device)
        v_val = _values_tensor(val_values, device) if conditioned else None
    model = ConditionalPrior(config).to(device)
    if config.crop:
        model.fit_border(x_train)
        x_train = model.centre_tokens(x_train)  # (N, T)
        if has_val:
            x_val = model.centre_tokens(x_val)
    unigram_bits = entropy_nats(code_counts(x_train.cpu().numpy(), config.vocab_size)) / LN2
    optimizer = configure_optimizer(model, tc)
    n = x_train.size(0)
    steps_per_epoch = max(n // tc.batch_size, 1)  # last partial batch dropped (full batches only)
    total_steps = steps_per_epoch * tc.epochs
    history: list[dict[str, float]] = []
    epoch0, step = 0, 0

    ckpt = hooks.checkpoint(ConditionalPrior.KIND)
    if ckpt is not None:
        epoch0, step = restore_training(ckpt, hooks.checkpoint_path, model, optimizer), int(ckpt["step"])
        history = [dict(h) for h in ckpt["history"]]

    for epoch in range(epoch0, tc.epochs):
        model.train()
        shuffle = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)  # reproducible across resumes
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum, t0 = torch.zeros((), device=device), time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * tc.batch_size : (b + 1) * tc.batch_size]
            x, y = x_train[idx], y_train[idx]  # (B, T), (B,)
            v = v_train[idx] if conditioned else None  # (B,)
            lr = lr_at(step, total_steps, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device, tc.bf16):
                logits = model(x, y, v)  # (B, T, K)
            loss = next_token_loss(logits, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            step += 1
            loss_sum += loss.detach()  # summed on the device: no sync per step
            if tc.log_every and step % tc.log_every == 0:
                hooks.log({"step_loss": float(loss.detach()), "lr": lr}, step)
            hooks.step(step, total_steps)
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
            metrics["val_bits_per_token"] = evaluate_nll(model, x_val, y_val, v_val, **kw) / LN2
        if has_val and epoch + 1 == tc.epochs:  # 3 more passes: once, not every epoch (~10 % of the training time)
            metrics["val_bits_per_token_uncond"] = evaluate_nll(model, x_val, None, **kw) / LN2
            if conditioned:  # what each condition alone is worth
                metrics["val_bits_per_token_class"] = evaluate_nll(model, x_val, y_val, **kw) / LN2
                metrics["val_bits_per_token_condition"] = evaluate_nll(model, x_val, None, v_val, **kw) / LN2
        history.append(metrics)
        if hooks.end_epoch(model, epoch + 1, metrics, optimizer=optimizer, history=history, step=step):
            break

    model.eval()
    return TrainResult(model, history, dict(history[-1]) if history else {})
