"""Embeddings and separability of latents (SPEC A4): PCA, t-SNE, k-NN accuracy and NMI against labels.

Dimension letters: N points, F flattened feature size (e.g. D*h*w).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: t-SNE implementation used by default; openTSNE measured faster than scikit-learn (benchmarks/tsne.py).
TSNE_BACKEND = "opentsne"


def _rows_f32(flat: np.ndarray, start: int, stop: int, normalise: bool) -> np.ndarray:
    """Rows start:stop of an (N, F) array as float32, L2-normalised when asked."""
    block = np.asarray(flat[start:stop], dtype=np.float32)  # (n, F)
    if normalise:
        block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return block


def _flatten_f32(features: np.ndarray, normalise: bool, chunk: int = 1024) -> np.ndarray:
    """(N, ...) -> (N, F) float32 copy, rows L2-normalised when asked, filled chunk by chunk."""
    flat = np.asarray(features).reshape(len(features), -1)  # (N, F), a view when contiguous
    out = np.empty(flat.shape, dtype=np.float32)
    for s in range(0, len(flat), chunk):
        out[s : s + chunk] = _rows_f32(flat, s, s + chunk, normalise)
    return out


def randomized_pca(
    features: np.ndarray,
    n_components: int,
    *,
    normalise: bool = True,
    n_iter: int = 4,
    oversample: int = 10,
    seed: int = 0,
    chunk: int = 512,
) -> np.ndarray:
    """(N, ...) -> (N, n_components) float32 PCA scores, reading the features chunk by chunk.

    Halko et al. randomized SVD of the centred (optionally row-normalised) matrix with the centring
    and normalisation applied on the fly, so memory stays O((N + F) * n_components) beyond the input:
    no (N, F) copy is made, and the input may be a memory map.
    """
    flat = np.asarray(features).reshape(len(features), -1)  # (N, F)
    n, f = flat.shape
    width = min(n_components + oversample, n, f)
    mean = np.zeros(f, dtype=np.float64)  # (F,)
    for s in range(0, n, chunk):
        mean += _rows_f32(flat, s, s + chunk, normalise).sum(axis=0, dtype=np.float64)
    mean = (mean / n).astype(np.float32)

    def a_times(right: np.ndarray) -> np.ndarray:
        """(A - 1 mean^T) @ right for right (F, l) -> (N, l)."""
        right = right.astype(np.float32)
        out = np.empty((n, right.shape[1]), dtype=np.float64)
        for s in range(0, n, chunk):
            out[s : s + chunk] = _rows_f32(flat, s, s + chunk, normalise) @ right
        return out - mean.astype(np.float64) @ right

    def at_times(left: np.ndarray) -> np.ndarray:
        """(A - 1 mean^T)^T @ left for left (N, l) -> (F, l)."""
        left32 = left.astype(np.float32)
        out = np.zeros((f, left.shape[1]), dtype=np.float64)
        for s in range(0, n, chunk):
            out += _rows_f32(flat, s, s + chunk, normalise).T @ left32[s : s + chunk]
        return out - np.outer(mean, left.sum(axis=0))

    omega = np.random.default_rng(seed).standard_normal((f, width))  # (F, l)
    y = a_times(omega)  # (N, l)
    for _ in range(n_iter):
        q, _ = np.linalg.qr(y)  # (N, l)
        z, _ = np.linalg.qr(at_times(q))  # (F, l)
        y = a_times(z)  # (N, l)
    q, _ = np.linalg.qr(y)  # (N, l)
    u_b, sing, _ = np.linalg.svd(at_times(q).T, full_matrices=False)  # (l, l), (l,)
    u = q @ u_b[:, :n_components]  # (N, k)
    u *= np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])  # deterministic signs
    return (u * sing[:n_components]).astype(np.float32)  # (N, k)


def reduce_features(
    features: np.ndarray, n_components: int | None = 50, *, metric: str = "cosine", seed: int = 0
) -> np.ndarray:
    """(N, ...) -> (N, <= n_components) float32 features in which Euclidean distance stands for `metric`.

    For "cosine" the rows are L2-normalised first (Euclidean distance between unit vectors is a
    monotone function of cosine distance); then PCA (randomized, chunked) keeps those distances as well
    as any linear projection can. The result feeds Euclidean t-SNE, k-NN and k-means in place of the
    full (N, D*h*w) latents. n_components None (or >= F) skips the PCA.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
    normalise = metric == "cosine"
    n, f = len(features), int(np.prod(np.shape(features)[1:]))
    if n_components is None or f <= n_components or n <= n_components:
        return _flatten_f32(features, normalise)
    return randomized_pca(features, n_components, normalise=normalise, seed=seed)


SMALL_TSNE = 1000  # points: below this t-SNE runs on one thread (embed_tsne)


def embed_tsne(
    features: np.ndarray,
    perplexity: float = 50.0,
    metric: str = "cosine",
    seed: int = 0,
    *,
    pca_dims: int | None = 50,
    backend: str | None = None,
    n_jobs: int | None = None,
    n_iter: int = 1000,
) -> np.ndarray:
    """(N, ...) features -> (N, 2) t-SNE embedding; features go through reduce_features(pca_dims, metric) first.

    n_iter (> 250) counts all iterations, the first 250 with early exaggeration (both backends). n_jobs None:
    one thread below SMALL_TSNE points, where threads give little and lose much on a busy machine (2-core machine:
    300 points idle 1.4 s on one thread vs 1.1 s on both; 200 points with one core busy 4.4 s vs 18.4 s), else
    every core (3,000 points idle: 24.6 s vs 15.3 s).
    """
    n = len(features)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    x = reduce_features(features, pca_dims, metric=metric, seed=seed)  # (N, <=pca_dims)
    perplexity = min(perplexity, (n - 1) / 3.0)
    backend = backend or TSNE_BACKEND
    if n_jobs is None:
        n_jobs = 1 if n < SMALL_TSNE else -1
    exaggerated = 250
    if n_iter <= exaggerated:
        raise ValueError(f"n_iter must exceed the {exaggerated} early-exaggeration iterations, got {n_iter}")
    if backend == "opentsne":
        from openTSNE import TSNE

        # same schedule as scikit-learn (250 exaggerated, then the rest); FFT gradients
        # measured faster than Barnes-Hut from a few thousand points on (benchmarks/tsne.py)
        tsne = TSNE(
            n_components=2,
            perplexity=perplexity,
            metric="euclidean",
            initialization="pca",
            early_exaggeration_iter=exaggerated,
            n_iter=n_iter - exaggerated,
            n_jobs=n_jobs,
            random_state=seed,
            negative_gradient_method="fft" if n >= 5000 else "bh",
        )
        embedding = np.asarray(tsne.fit(x))
    elif backend == "sklearn":
        from sklearn.manifold import TSNE

        tsne = TSNE(
            n_components=2,
            perplexity=perplexity,
            metric="euclidean",
            init="pca",
            max_iter=n_iter,
            random_state=seed,
            n_jobs=n_jobs,
        )
        embedding = tsne.fit_transform(x)
    else:
        raise ValueError(f"backend must be 'opentsne' or 'sklearn', not {backend!r}")
    return embedding.astype(np.float32)  # (N, 2)


def knn_accuracy(
    features: np.ndarray, labels: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0, metric: str = "cosine"
) -> tuple[float, float]:
    """Mean and std of k-NN accuracy over stratified folds (pass reduce_features output for large F)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(features).reshape(len(features), -1)  # (N, F)
    labels = np.asarray(labels)
    scores = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, labels):
        knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric=metric, algorithm="brute")
        scores.append(knn.fit(x[train], labels[train]).score(x[test], labels[test]))
    return float(np.mean(scores)), float(np.std(scores))


def kmeans_clusters(features: np.ndarray, n_clusters: int, seed: int = 0, *, normalise: bool = True) -> np.ndarray:
    """(N,) k-means cluster ids of the features (rows L2-normalised first when asked: cosine-like)."""
    from sklearn.cluster import KMeans

    x = _flatten_f32(features, normalise)  # (N, F)
    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(x)


def label_nmi(
    features_or_clusters: np.ndarray, labels: np.ndarray, seed: int = 0, n_clusters: int | None = None
) -> float:
    """NMI between labels and k-means clusters of the features (k = number of classes), or given (N,) cluster ids."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.asarray(labels)
    x = np.asarray(features_or_clusters)
    clusters = x if x.ndim == 1 else kmeans_clusters(x, n_clusters or len(np.unique(labels)), seed)
    return float(normalized_mutual_info_score(labels, clusters))


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always guessing the most frequent class: what a classifier blind to the features reaches."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def chance_nmi(clusters: np.ndarray, labels: np.ndarray, seed: int = 0, n_shuffles: int = 10) -> float:
    """Mean NMI of the same clusters against shuffled labels: NMI's finite-sample floor (about 0)."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return float(np.mean([normalized_mutual_info_score(rng.permutation(labels), clusters) for _ in range(n_shuffles)]))


class Separability(NamedTuple):
    """How well latents separate the classes, each number beside its chance level."""

    knn: float  # mean k-NN accuracy over the folds
    knn_std: float  # its standard deviation over the folds
    knn_chance: float  # majority-class frequency
    nmi: float  # NMI(k-means clusters, labels)
    nmi_chance: float  # NMI(same clusters, shuffled labels)


def separability(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 5,
    folds: int = 5,
    seed: int = 0,
    metric: str = "cosine",
    pca_dims: int | None = 50,
) -> Separability:
    """k-NN accuracy and k-means NMI of features against labels, with chance levels, after reduce_features."""
    labels = np.asarray(labels)
    x = reduce_features(features, pca_dims, metric=metric, seed=seed)  # (N, <=pca_dims), Euclidean geometry
    knn, knn_std = knn_accuracy(x, labels, k=k, folds=folds, seed=seed, metric="euclidean")
    clusters = kmeans_clusters(x, len(np.unique(labels)), seed, normalise=False)
    return Separability(
        knn, knn_std, chance_accuracy(labels), label_nmi(clusters, labels), chance_nmi(clusters, labels, seed)
    )
