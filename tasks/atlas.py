"""Atlas stage: the article's codebook analyses (A1-A5) as figures and metrics under `atlas/` in one MLflow run.

It reuses the stage's cached tokens (every image of the prepared folder, tokenized once per VQ-VAE).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
from prefect import task

from model.atlas import decoders, pick_codes, quantized_features
from model.data import load_prepared
from model.embedding import embed_tsne, reduce_features, separability
from model.errors import UserError
from model.galaxy10 import CLASS_NAMES
from model.metrics import codebook_usage
from model.plotting import atlas as figures
from tasks import registry, tracking
from tasks.cache import stage_cache_key
from tasks.progress import bar
from tasks.retry import retry_on_io
from tasks.tokens import tokenize_dataset

EXPERIMENT = "galaxy-atlas"


def check_codes(codes: Sequence[int], codebook_size: int) -> list[int]:
    bad = [c for c in codes if not 0 <= c < codebook_size]
    if bad:
        raise UserError("--codes", f"code {bad[0]} is outside 0-{codebook_size - 1}")
    return list(codes)


def atlas_run(
    vqvae_uri: str, data_dir: str | Path, *, codes: Sequence[int] = (), limit: int | None = None, seed: int = 0
) -> dict:
    """Log every atlas figure and number for a registered VQ-VAE on a prepared folder; returns {run_id, metrics}."""
    tracking.setup()
    data = load_prepared(data_dir)
    vqvae, _ = registry.load_vqvae(vqvae_uri)
    cfg = vqvae.config
    codes = check_codes(codes, cfg.codebook_size)
    tokens = np.asarray(
        np.load(tokenize_dataset(vqvae_uri, data_dir) / "tokens.npy", mmap_mode="r")[:limit], dtype=np.int64
    )
    labels = data.labels[: len(tokens)].astype(np.int64)
    grid_hw = (cfg.grid, cfg.grid)
    indices = tokens.reshape(len(tokens), *grid_hw)  # (N, h, w)
    codebook = vqvae.codebook.detach().float().numpy()  # (K, D)
    decode, decode_latents = decoders(vqvae)
    usage = codebook_usage(indices, cfg.codebook_size)
    metrics: dict[str, float] = {
        "utilisation": usage.utilisation,
        "perplexity": usage.perplexity,
        "effective_usage": usage.effective_usage,
        "images": float(len(indices)),
    }
    tags = tracking.base_tags(data.meta, "cpu", stage="atlas", vqvae_uri=vqvae_uri)
    with (
        tracking.run(EXPERIMENT, tracking.run_name("atlas", data.meta), tags) as active,
        bar(total=6, desc="atlas", unit="figure") as pbar,
    ):
        mlflow.log_params(
            {
                "vqvae_uri": vqvae_uri,
                "data_dir": str(data.root),
                "images": len(indices),
                "codebook_size": cfg.codebook_size,
                "grid": cfg.grid,
                "seed": seed,
            }
        )
        # A1 code frequencies
        tracking.log_figure(
            figures.code_frequency_figure(usage.counts, title=f"Codebook usage over {len(indices)} images"),
            "atlas/code_frequency.png",
        )
        tracking.log_array(usage.counts, "atlas/code_counts.npy")
        pbar.update()
        # A2 heads and tails
        ns = tuple(n for n in (4, 16, 64, 256) if n <= cfg.codebook_size)
        tracking.log_figure(
            figures.heads_tails_figure(decode, usage.counts, grid_hw=grid_hw, ns=ns, rng=seed), "atlas/heads_tails.png"
        )
        pbar.update()
        # A3 individual codes
        chosen = list(dict.fromkeys(pick_codes(usage.counts, 2, 2) + codes))
        tracking.log_figure(
            figures.code_panels_figure(codebook, decode_latents, indices, chosen), "atlas/code_panels.png"
        )
        mlflow.log_param("panel_codes", ",".join(map(str, chosen)))
        pbar.update()
        # A4 morphological atlas: t-SNE, k-NN accuracy and NMI against the labels, beside chance
        t0 = time.perf_counter()
        # cosine geometry -> unit rows -> PCA to 50 dims, done once for t-SNE and the separability numbers
        reduced = reduce_features(quantized_features(codebook, tokens), 50, metric="cosine", seed=seed)
        embedding = embed_tsne(
            reduced, perplexity=min(50.0, (len(reduced) - 1) / 3), metric="euclidean", seed=seed, pca_dims=None
        )
        metrics["tsne_seconds"] = time.perf_counter() - t0
        tracking.log_figure(
            figures.atlas_figure(
                embedding,
                labels,
                CLASS_NAMES,
                f"Morphological atlas: t-SNE of quantized latents ({len(labels)} images)",
            ),
            "atlas/tsne_atlas.png",
        )
        tracking.log_array(embedding.astype(np.float32), "atlas/tsne_embedding.npy")
        pbar.update()
        sep = separability(reduced, labels, seed=seed, metric="euclidean", pca_dims=None)
        metrics.update(
            knn_accuracy=sep.knn,
            knn_accuracy_std=sep.knn_std,
            knn_chance=sep.knn_chance,
            nmi=sep.nmi,
            nmi_chance=sep.nmi_chance,
        )
        tracking.log_figure(
            figures.separability_figure(sep.knn, sep.knn_chance, sep.nmi, sep.nmi_chance, knn_std=sep.knn_std),
            "atlas/separability.png",
        )
        pbar.update()
        # A5 random codes through the decoder
        tracking.log_figure(
            figures.random_codes_figure(decode, cfg.codebook_size, grid_hw, 16, rng=seed, counts=usage.counts),
            "atlas/random_codes.png",
        )
        pbar.update()
        mlflow.log_metrics(metrics)
        run_id = active.info.run_id
    return {"run_id": run_id, "metrics": {k: float(v) for k, v in metrics.items()}}


@task(
    name="atlas",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_io,
    persist_result=True,
    cache_key_fn=stage_cache_key,
)
def atlas_task(vqvae_uri: str, data_dir: str, limit: int | None = None, seed: int = 0) -> dict:
    """The codebook atlas of a registered VQ-VAE, logged to MLflow; returns {run_id, metrics}."""
    return atlas_run(vqvae_uri, data_dir, limit=limit, seed=seed)
