"""Which t-SNE for the atlas (SPEC A4): openTSNE (the project's default) against scikit-learn, same schedule.

Both run single-threaded on the same 50-dim clustered points (the shape of PCA-reduced latents), with
perplexity 50 and 1000 iterations (250 exaggerated); CPU seconds are reported because the machine may
be shared. Then the default backend embeds a full Galaxy10-sized set (17,736 points).
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from model.atlas import TSNE_BACKEND, embed_tsne, knn_accuracy  # noqa: E402

N_SMALL, N_FULL, DIMS, CLASSES = 6000, 17_736, 50, 10


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
    ratio = results[other] / results[TSNE_BACKEND]
    print(f"tsne: {ratio:.2f}x {TSNE_BACKEND} vs {other} at N={N_SMALL}, 1 thread "
          f"({results[TSNE_BACKEND]:.1f} s vs {results[other]:.1f} s CPU); full N={N_FULL} with {TSNE_BACKEND}: {cpu_full:.0f} s CPU")


if __name__ == "__main__":
    main()
