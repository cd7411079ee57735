"""Morphology judge (SPEC E1): a compact CNN classifier of galaxy images that scores generated samples.

Trained on the prepared real images, it answers three questions about samples from the prior: do
samples conditioned on class c look like c (class-conditional accuracy against cfg_scale), how far are
generated images from real ones in the classifier's feature space (Fréchet distance), and which classes
get confused (per-class precision / recall, confusion matrix).

Dimension letters: N images, B batch, C colour channels (3), H/W image size, F feature size
(= widths[-1]), K classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure

from model.config import Config
from model.errors import UserError
from model.galaxy10 import NUM_CLASSES
from model.utils import atomic_save, pick_device, read_checkpoint, seed_everything, uint8_to_unit


@dataclass
class JudgeConfig(Config):
    """Architecture and training settings of the morphology judge (the model is rebuilt from this alone)."""

    image_size: int = 128  # input height = width; predict() checks images against it
    num_classes: int = NUM_CLASSES  # output classes
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of each conv stage (each halves H, W); F = widths[-1]
    dropout: float = 0.2  # dropout on the pooled features before the linear head
    epochs: int = 20  # passes over the training split
    batch_size: int = 128  # images per optimizer step
    lr: float = 2e-3  # peak AdamW learning rate (one-cycle schedule)
    weight_decay: float = 0.05  # AdamW weight decay
    augment: bool = True  # random flips and 90-degree rotations (morphology does not depend on orientation)
    blur: float = 1.5  # max Gaussian blur sigma (px) applied to half of each batch, so softness is not a class cue
    seed: int = 0  # seeds init, batch order and augmentation
    device: str | None = None  # None: cuda, mps, cpu in that order
    eval_batch_size: int = 256  # images per forward in validation and predict


#: Named presets: "demo" trains in minutes on a CPU, "article" is the full-size judge.
PRESETS: dict[str, JudgeConfig] = {
    "demo": JudgeConfig(widths=(16, 32, 64, 128), epochs=4, batch_size=64, dropout=0.1),
    "article": JudgeConfig(widths=(32, 64, 128, 256), epochs=30, batch_size=128, dropout=0.2),
}


def judge_preset(name: str, **overrides: Any) -> JudgeConfig:
    """A copy of a named preset with fields overridden."""
    if name not in PRESETS:
        raise UserError(None, f"unknown judge preset {name!r} (choose from {', '.join(PRESETS)})")
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------------------------------
# model


class ConvBlock(nn.Sequential):
    """Two conv3x3-BN-ReLU layers, then 2x2 max pooling: (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )


class MorphologyCNN(nn.Module):
    """Compact CNN: conv blocks, global average pool to an F-dim feature vector, linear head to K classes."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        chans = (3, *config.widths)
        self.blocks = nn.Sequential(*[ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.widths[-1], config.num_classes)

    @property
    def feature_dim(self) -> int:
        """F, the length of the feature vector."""
        return self.config.widths[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> pooled features (B, F)."""
        return self.blocks(x).mean(dim=(2, 3))  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> logits (B, K)."""
        return self.head(self.dropout(self.features(x)))


# ---------------------------------------------------------------------------------------------------
# training


class JudgeResult(NamedTuple):
    """The trained judge (best validation accuracy, eval mode), per-epoch metrics and the best epoch (1-based)."""

    model: MorphologyCNN
    history: list[dict[str, float]]
    best_epoch: int


def augment_square(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, H, W, C) -> same, each image under a random flip / 90-degree rotation (the 8 symmetries of the square)."""
    b, h, w, _ = batch.shape
    if h != w:
        raise ValueError(f"augmentation needs square images, got {h}x{w}")
    on = (torch.rand(3, b, generator=generator) < 0.5).to(batch.device).view(3, b, 1, 1, 1)  # flip W, flip H, transpose
    batch = torch.where(on[0], batch.flip(2), batch)
    batch = torch.where(on[1], batch.flip(1), batch)
    return torch.where(on[2], batch.transpose(1, 2), batch)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) float -> same, blurred by a separable Gaussian of std ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def blur_half(x: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Blur a random half of the batch with one sigma drawn from U(0.3, max_sigma); the rest stays sharp."""
    if max_sigma <= 0:
        return x
    pick = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)  # (B,)
    sigma = 0.3 + (max_sigma - 0.3) * float(torch.rand(1, generator=generator))
    return torch.where(pick.view(-1, 1, 1, 1), gaussian_blur(x, sigma), x)


def _check_images(images: np.ndarray | torch.Tensor, config: JudgeConfig, name: str) -> None:
    """Images must be (N, S, S, 3) uint8 with S = config.image_size."""
    s = config.image_size
    if images.dtype not in (np.uint8, torch.uint8) or tuple(images.shape[1:]) != (s, s, 3):
        raise ValueError(f"{name}: expected (N, {s}, {s}, 3) uint8 images, got {tuple(images.shape)} {images.dtype}")


def _as_tensor(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor on device (no copy when it already is one there)."""
    if isinstance(array, torch.Tensor):
        return array.to(device)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


@torch.inference_mode()
def _evaluate(model: MorphologyCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the model (eval mode) on uint8 images."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for s in range(0, len(images), batch_size):
        logits = model(uint8_to_unit(images[s : s + batch_size])).float()  # (B, K)
        y = labels[s : s + batch_size]
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = max(len(images), 1)
    return loss / n, correct / n


def train_judge(
    config: JudgeConfig,
    train_images: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    val_images: np.ndarray | torch.Tensor,
    val_labels: np.ndarray | torch.Tensor,
    *,
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None,
    progress: Callable[[int, int], None] | None = None,
) -> JudgeResult:
    """Train the judge on (N, H, W, 3) uint8 images with cross-entropy, AdamW and a one-cycle schedule.

    After each epoch ``log(metrics, epoch)`` gets train/val loss and accuracy; ``progress(done_steps,
    total_steps)`` is called after each step. The weights of the best validation-accuracy epoch are kept.
    """
    _check_images(train_images, config, "train_images")
    _check_images(val_images, config, "val_images")
    labels_np = np.asarray(train_labels)
    if labels_np.min() < 0 or labels_np.max() >= config.num_classes:
        raise ValueError(f"train_labels outside [0, {config.num_classes})")
    device = pick_device(config.device)
    seed_everything(config.seed)
    model = MorphologyCNN(config).to(device)
    generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation (CPU)

    data = _as_tensor(train_images, device)  # (N, H, W, 3) uint8
    labels = _as_tensor(train_labels, device).long()  # (N,)
    val_data = _as_tensor(val_images, device)
    val_y = _as_tensor(val_labels, device).long()
    n = len(data)
    batch_size = min(config.batch_size, n)
    steps_per_epoch = n // batch_size  # last partial batch dropped; the shuffle changes every epoch
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total, 1), pct_start=0.15)
    amp = device.type == "cuda"

    history: list[dict[str, float]] = []
    best_acc, best_epoch, best_state = -1.0, 0, None
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=generator).to(device)  # (N,)
        sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss, correct
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            batch = data[idx]  # (B, H, W, 3) uint8
            if config.augment:
                batch = augment_square(batch, generator)
            x, y = uint8_to_unit(batch), labels[idx]  # (B, 3, H, W), (B,)
            if config.augment:
                x = blur_half(x, config.blur, generator)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums += torch.stack([loss.detach() * len(y), (logits.argmax(1) == y).sum()]).double()
            if progress is not None:
                progress(epoch * steps_per_epoch + i + 1, total)
        train_loss, train_correct = (sums / max(steps_per_epoch * batch_size, 1)).tolist()
        val_loss, val_acc = _evaluate(model, val_data, val_y, config.eval_batch_size)
        metrics = {
            "epoch": float(epoch + 1),
            "train_loss": train_loss,
            "train_acc": train_correct,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "epoch_time_s": time.perf_counter() - t0,
        }
        history.append(metrics)
        log(metrics, epoch + 1)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return JudgeResult(model.eval(), history, best_epoch)


# ---------------------------------------------------------------------------------------------------
# checkpoints


def save_judge(path: str | Path, model: MorphologyCNN, history: Sequence[dict[str, float]] = ()) -> None:
    """Write {'model', 'model_config', 'history'} (tensors and plain values) to a temp name, then rename."""
    model = getattr(model, "_orig_mod", model)  # the uncompiled module
    atomic_save({"model": model.state_dict(), "model_config": model.config.to_dict(), "history": [dict(h) for h in history]}, path)


def load_judge(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MorphologyCNN, dict[str, Any]]:
    """Rebuild the judge from its stored config and load the weights strictly; returns (model in eval mode, ckpt)."""
    ckpt = read_checkpoint(path, "judge", map_location)
    model = MorphologyCNN(JudgeConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    return model.to(map_location).eval(), ckpt


# ---------------------------------------------------------------------------------------------------
# judging


@torch.inference_mode()
def predict(
    model: MorphologyCNN, images: np.ndarray | torch.Tensor, batch_size: int = 256, device: str | torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 images -> class probabilities (N, K) and features (N, F), float32 numpy."""
    _check_images(images, model.config, "images")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs, feats = [], []
    for s in range(0, len(images), batch_size):
        x = uint8_to_unit(_as_tensor(images[s : s + batch_size], device))  # (B, 3, H, W)
        f = model.features(x)  # (B, F)
        probs.append(F.softmax(model.head(f).float(), dim=1).cpu())
        feats.append(f.float().cpu())
    model.train(was_training)
    k, d = model.config.num_classes, model.feature_dim
    if not probs:
        return np.zeros((0, k), np.float32), np.zeros((0, d), np.float32)
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> dict[str, Any]:
    """Accuracy, per-class precision and recall (0 where undefined), support and confusion (rows true, cols predicted)."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} outside [0, {num_classes})")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # (K true, K predicted)
    np.add.at(confusion, (y_true, y_pred), 1)
    hits = np.diag(confusion).astype(np.float64)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    return {
        "accuracy": float(hits.sum() / max(confusion.sum(), 1)),
        "precision": np.divide(hits, predicted, out=np.zeros(num_classes), where=predicted > 0),
        "recall": np.divide(hits, support, out=np.zeros(num_classes), where=support > 0),
        "support": support,
        "confusion": confusion,
    }


def conditional_accuracy(probs: np.ndarray, target_labels: np.ndarray, num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, float]:
    """Fraction of samples the judge assigns to the class they were generated for: per class (K,), NaN without samples, and overall."""
    target_labels = np.asarray(target_labels)
    hit = np.asarray(probs).argmax(axis=1) == target_labels  # (N,)
    per_class = np.array([hit[target_labels == c].mean() if (target_labels == c).any() else np.nan for c in range(num_classes)])
    return per_class, float(hit.mean()) if hit.size else float("nan")


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of (N, F) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, F) features, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Fréchet distance of two Gaussians (as in FID)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"mismatched statistics: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular product: offset both covariances
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in the covariance square root")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def frechet_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


# ---------------------------------------------------------------------------------------------------
# figures


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = "Judge confusion matrix") -> Figure:
    """Confusion matrix normalised per true class, each cell annotated with its percentage."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1, keepdims=True)  # (K, 1)
    norm = np.divide(confusion, support, out=np.zeros_like(confusion), where=support > 0)  # rows sum to 1
    k = len(class_names)
    fig = Figure(figsize=(2.5 + 0.75 * k, 2.0 + 0.65 * k), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    for i in range(k):
        for j in range(k):
            if confusion[i, j] > 0:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), list(class_names), rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(k), [f"{name} ({int(n)})" for name, n in zip(class_names, support[:, 0])], fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (support)")
    acc = np.trace(confusion) / max(confusion.sum(), 1)
    fig.suptitle(f"{title} (accuracy {100 * acc:.1f}%, % of each true class)", fontsize=11)
    return fig


def class_accuracy_curve_figure(
    cfg_values: Sequence[float],
    accuracies_per_class: np.ndarray,
    overall: Sequence[float],
    class_names: Sequence[str],
    title: str = "Does the judge recognise the conditioning class?",
) -> Figure:
    """Judge accuracy of samples against cfg_scale: one line per class, overall in black, chance 1/K dashed."""
    from model.atlas import class_colours

    cfg = np.asarray(cfg_values, dtype=np.float64)
    acc = np.asarray(accuracies_per_class, dtype=np.float64)  # (n_cfg, K)
    k = len(class_names)
    colours = class_colours(k)
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.subplots()
    for c, name in enumerate(class_names):
        ax.plot(cfg, acc[:, c], marker="o", ms=4, lw=1.2, color=colours[c], label=name)
    ax.plot(cfg, overall, marker="s", lw=3, color="black", label="all classes")
    ax.axhline(1.0 / k, color="0.5", ls="--", lw=1, label=f"chance (1/{k})")
    if cfg.min() > 0 and cfg.max() / cfg.min() >= 10:
        ax.set_xscale("log")
    ax.set_xticks(cfg, [f"{v:g}" for v in cfg])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("classifier-free guidance scale (cfg_scale)")
    ax.set_ylabel("fraction of samples judged as their class")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=12)
    return fig


def precision_recall_figure(report: dict[str, Any], class_names: Sequence[str], title: str = "Judge per-class precision and recall") -> Figure:
    """Grouped bars of per-class precision and recall from classification_report."""
    k = len(class_names)
    x = np.arange(k)
    fig = Figure(figsize=(2 + 0.8 * k, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(x - 0.2, report["precision"], 0.4, label="precision", color="tab:blue")
    ax.bar(x + 0.2, report["recall"], 0.4, label="recall", color="tab:orange")
    ax.set_xticks(x, list(class_names), rotation=35, ha="right", fontsize=9)
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} (accuracy {100 * report['accuracy']:.1f}%)", fontsize=12)
    return fig


__all__ = [
    "PRESETS",
    "JudgeConfig",
    "JudgeResult",
    "MorphologyCNN",
    "augment_square",
    "class_accuracy_curve_figure",
    "classification_report",
    "conditional_accuracy",
    "confusion_figure",
    "feature_stats",
    "frechet_distance",
    "frechet_from_features",
    "judge_preset",
    "load_judge",
    "predict",
    "precision_recall_figure",
    "save_judge",
    "train_judge",
]
