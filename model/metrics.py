"""Numbers shared by training, the atlas and evaluation.

Codebook usage, perplexity, PSNR and entropy; classification reports (balanced accuracy), class-conditional
accuracy; Fréchet distances between feature sets, with classes weighing equally.

Dimension letters: N images, K classes (or codebook entries), F feature size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import torch


class CodebookUsage(NamedTuple):
    """How a codebook of K entries is used by a set of indices."""

    counts: np.ndarray  # (K,) int64 occurrences per code
    utilisation: float  # fraction of codes used at least once, in [0, 1]
    perplexity: float  # exp(entropy of the code distribution), in [1, K]
    effective_usage: float  # perplexity / K, in (0, 1]


def code_counts(indices: np.ndarray | torch.Tensor, codebook_size: int) -> np.ndarray:
    """Occurrences of each code 0..K-1 in an index array of any shape."""
    flat = torch.as_tensor(indices).reshape(-1).long().cpu()
    if flat.numel() and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(f"indices outside [0, {codebook_size})")
    return torch.bincount(flat, minlength=codebook_size).numpy().astype(np.int64)


def entropy_nats(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def codebook_usage(indices: np.ndarray | torch.Tensor, codebook_size: int) -> CodebookUsage:
    """Utilisation and perplexity of a codebook from the indices it produced (e.g. a whole split)."""
    counts = code_counts(indices, codebook_size)
    perplexity = math.exp(entropy_nats(counts))
    return CodebookUsage(
        counts=counts,
        utilisation=float((counts > 0).mean()),
        perplexity=perplexity,
        effective_usage=perplexity / codebook_size,
    )


def psnr(mse: float, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (data range 2)."""
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(data_range**2 / mse)


# --------------------------------------------------------------------------------------------------
# classification


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, per-class precision and recall (0 where undefined), support, confusion (rows true, cols predicted)."""
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


def balanced_accuracy(report: dict[str, Any]) -> float:
    """Mean recall over the classes present (support > 0) of a ``classification_report``; NaN if none is."""
    present = np.asarray(report["support"]) > 0
    return float(np.mean(np.asarray(report["recall"])[present])) if present.any() else float("nan")


def balanced_hit_rate(hit: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the fraction of ``hit`` (N,) that is true; NaN if N = 0."""
    hit, labels = np.asarray(hit, dtype=np.float64), np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    if not len(classes):
        return float("nan")
    return float(np.mean(np.bincount(inverse, weights=hit) / np.bincount(inverse)))


def conditional_accuracy(probs: np.ndarray, target_labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """Fraction of images judged as their class: per class (K,; NaN without images), and class-balanced (the mean
    of the per-class fractions over the classes present, so a class counts the same whatever its size)."""
    target_labels = np.asarray(target_labels)
    hit = np.asarray(probs).argmax(axis=1) == target_labels  # (N,)
    per_class = np.array(
        [hit[target_labels == c].mean() if (target_labels == c).any() else np.nan for c in range(num_classes)]
    )
    return per_class, balanced_hit_rate(hit, target_labels)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of (N, F) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, F) features, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
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
        # sqrtm's rounding noise grows with the covariances: the tolerance follows their mean variance
        scale = max(1.0, float(np.trace(sigma1) + np.trace(sigma2)) / (2 * len(sigma1)))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * scale):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in the covariance square root")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def frechet_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


# --------------------------------------------------------------------------------------------------
# Fréchet distances with few images per class


def balanced_stats(features: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of the (N, F) features of ``classes``, each class weighing equally."""
    labels = np.asarray(labels)
    keep = np.isin(labels, list(classes))
    features, labels = np.asarray(features, dtype=np.float64)[keep], labels[keep]
    if len(features) < 2:
        raise ValueError(f"need at least 2 images, got {len(features)}")
    counts = {c: int((labels == c).sum()) for c in classes}
    weights = np.array([1.0 / counts[c] for c in labels])  # (N,)
    return np.average(features, axis=0, weights=weights), np.cov(features, rowvar=False, aweights=weights)


def balanced_frechet(f1: np.ndarray, y1: np.ndarray, f2: np.ndarray, y2: np.ndarray) -> float:
    """FD between two labelled feature sets over the classes both hold, every class weighing equally."""
    common = sorted(set(np.asarray(y1).tolist()) & set(np.asarray(y2).tolist()))
    if not common:
        return float("nan")
    with warnings.catch_warnings():  # few images per class: singular covariances are expected (and offset)
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return frechet_distance(*balanced_stats(f1, y1, common), *balanced_stats(f2, y2, common))


def per_class_frechet(
    f1: np.ndarray,
    y1: np.ndarray,
    f2: np.ndarray,
    y2: np.ndarray,
    class_names: Sequence[str],
    what: str,
    notes: list[str],
) -> np.ndarray:
    """FD per class (K,); NaN (and a line in ``notes``) where a set holds fewer than 2 images of the class."""
    num_classes = len(class_names)
    out = np.full(num_classes, np.nan)
    skipped = []
    for c in range(num_classes):
        a, b = f1[np.asarray(y1) == c], f2[np.asarray(y2) == c]
        if len(a) < 2 or len(b) < 2:
            skipped.append(f"class {c} {class_names[c]} ({len(a)} vs {len(b)} images)")
            continue
        with warnings.catch_warnings():  # fewer images than features: singular covariances are expected
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            out[c] = frechet_from_features(a, b)
    if skipped:
        notes.append(f"{what}: per-class FD skipped (it needs 2 or more images on each side) for {'; '.join(skipped)}")
    return out


# --------------------------------------------------------------------------------------------------
# a feature space the sample size supports


class PCA(NamedTuple):
    """A linear projection onto the leading principal directions of a set of features."""

    mean: np.ndarray  # (F,)
    components: np.ndarray  # (F, d) orthonormal columns, by decreasing variance
    explained: float  # fraction of the fitted features' variance the d directions keep

    def project(self, features: np.ndarray) -> np.ndarray:
        """(N, F) -> (N, d)."""
        return (np.asarray(features, dtype=np.float64) - self.mean) @ self.components


def fit_pca(features: np.ndarray, dims: int) -> PCA:
    """PCA of (N, F) features keeping ``dims`` directions (at most min(N - 1, F))."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, F) features to fit a PCA, got {features.shape}")
    dims = max(1, min(int(dims), len(features) - 1, features.shape[1]))
    mean = features.mean(axis=0)
    _, s, vt = np.linalg.svd(features - mean, full_matrices=False)  # s: (min(N, F),), vt: (min(N, F), F)
    variance = s**2
    explained = float(variance[:dims].sum() / variance.sum()) if variance.sum() > 0 else 1.0
    return PCA(mean, vt[:dims].T, explained)
