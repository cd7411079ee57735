"""Which t-SNE for the atlas (SPEC A4): openTSNE (the project's default) against scikit-learn, same schedule.

Both run single-threaded on the same 50-dim clustered points (the shape of PCA-reduced latents), with
perplexity 50 and 1000 iterations (250 exaggerated); CPU seconds are reported because the machine may
be shared. Then the default backend embeds a full Galaxy10-sized set (17,736 points).
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from model.embedding import TSNE_BACKEND, embed_tsne, knn_accuracy, reduce_features  # noqa: E402

N_SMALL, N_FULL, DIMS, CLASSES = 6000, 17_736, 50, 10
LATENT = 16 * 16 * 256  # quantized-latent features per image at the article's settings (grid 16x16, D = 256)


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points in DIMS dims around CLASSES centres, with their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    centres = rng.normal(size=(CLASSES, DIMS)) * 2.0
    return (centres[labels] + rng.normal(size=(n, DIMS))).astype(np.float32), labels


def timed(backend: str, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Embedding, CPU seconds and wall seconds of one single-threaded run."""
    cpu, wall = time.process_time(), time.perf_counter()
    emb = embed_tsne(x, 50, metric="euclidean", seed=0, pca_dims=None, backend=backend, n_jobs=1)
    return emb, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    x, labels = clustered(N_SMALL)
    results = {}
    for backend in ("opentsne", "sklearn"):
        emb, cpu, wall = timed(backend, x)
        acc, _ = knn_accuracy(emb, labels, k=5, metric="euclidean")
        results[backend] = cpu
        print(f"{backend:9s} N={N_SMALL}: {cpu:6.1f} s CPU ({wall:6.1f} s wall), 5-NN accuracy on embedding {acc:.3f}")
    other = "sklearn" if TSNE_BACKEND == "opentsne" else "opentsne"
    x_full, labels_full = clustered(N_FULL, seed=1)
    emb, cpu_full, wall_full = timed(TSNE_BACKEND, x_full)
    acc, _ = knn_accuracy(emb, labels_full, k=5, metric="euclidean")
    print(f"{TSNE_BACKEND:9s} N={N_FULL}: {cpu_full:6.1f} s CPU ({wall_full:6.1f} s wall), 5-NN accuracy {acc:.3f}")
    pca_s, rss_gb = full_pca()
    print(
        f"PCA of the full {N_FULL} x {LATENT} float32 latents to {DIMS} dims: "
        f"{pca_s:.0f} s wall, peak RSS {rss_gb:.1f} GB"
    )
    ratio = results[other] / results[TSNE_BACKEND]
    print(
        f"tsne: {ratio:.2f}x {TSNE_BACKEND} vs {other} at N={N_SMALL}, 1 thread "
        f"({results[TSNE_BACKEND]:.1f} s vs {results[other]:.1f} s CPU); full N={N_FULL}: PCA {pca_s:.0f} s + "
        f"{TSNE_BACKEND} {cpu_full:.0f} s CPU, peak RSS {rss_gb:.1f} GB"
    )


def full_pca() -> tuple[float, float]:
    """Time the atlas's reduction of a full-size latent array (the step before t-SNE); (seconds, peak RSS GB)."""
    rng = np.random.default_rng(2)
    x = np.empty((N_FULL, LATENT), dtype=np.float32)
    basis = rng.standard_normal((DIMS, LATENT), dtype=np.float32)
    for start in range(0, N_FULL, 1024):  # low-rank structure plus noise, filled in chunks
        stop = min(start + 1024, N_FULL)
        x[start:stop] = rng.standard_normal((stop - start, DIMS), dtype=np.float32) @ basis
        x[start:stop] += rng.standard_normal((stop - start, LATENT), dtype=np.float32)
    t0 = time.perf_counter()
    reduced = reduce_features(x, DIMS, metric="cosine", seed=0)
    seconds = time.perf_counter() - t0
    assert reduced.shape == (N_FULL, DIMS)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


if __name__ == "__main__":
    main()
