"""VQ-VAE stage: train on a prepared folder, log everything to MLflow, register `galaxy-vqvae`.

The run is resumable (``tasks.runs.TrainingRun``): the same command after a kill carries on the same
MLflow run from the last finished epoch, and a rerun of a finished run registers nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from prefect import task

from model.checkpoint import load_model
from model.config import from_preset
from model.data import load_prepared
from model.errors import UserError
from model.train_vqvae import evaluate_vqvae, reconstruct_images, train_vqvae
from model.utils import image_grid
from model.vqvae import PRESETS, VQVAE
from tasks import registry, tracking
from tasks.cache import stage_cache_key
from tasks.champion import ChampionRule
from tasks.runs import TrainingRun

EXPERIMENT = "galaxy-vqvae"
GRID_IMAGES = 8  # validation images in the logged reconstruction grids


def recon_grid(originals: np.ndarray, recons: np.ndarray) -> np.ndarray:
    """Originals in the top row, their reconstructions below: one (H', W', 3) uint8 image."""
    return image_grid(np.concatenate([originals, recons]), nrow=len(originals))


def train_vqvae_run(
    data_dir: str | Path,
    preset_name: str = "demo",
    *,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    nested: bool = False,
    register_as: str | None = registry.VQVAE_MODEL,
    on_epoch_end: Callable[[int, dict], Any] | None = None,
    extra_tags: dict[str, str] | None = None,
    resume: bool = True,
    experiment: str = EXPERIMENT,
    run_folder: str | Path | None = None,
) -> registry.ModelRef:
    """Train, evaluate, log and register one VQ-VAE; returns its run and registered model.

    ``run_folder`` overrides where the resumable checkpoint lives; ``experiment`` names the MLflow
    experiment (sweeps put their trials beside their parent run).
    """
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    config = from_preset(PRESETS, preset_name, **overrides)
    if config.image_size != data.meta["size"]:
        raise UserError(
            data_dir, f"images are {data.meta['size']} px but preset {preset_name!r} expects {config.image_size}"
        )
    train_x, _ = data.subset("train", limit)
    val_x, _ = data.subset("val", limit and max(limit // 8, GRID_IMAGES))
    run = TrainingRun(
        "vqvae",
        experiment,
        config,
        data,
        preset_name,
        identity=(limit,),
        resume=resume,
        nested=nested,
        folder=run_folder,
        data_params={"n_train": len(train_x), "n_val": len(val_x)},
        params={"model_grid": config.grid, "model_seq_len": config.seq_len},
        tags=extra_tags,
    )
    if run.complete:
        return run.complete
    with run:
        originals = val_x[:GRID_IMAGES]
        grid_every = max(1, config.epochs // 10)

        def epoch_end(epoch: int, metrics: dict) -> Any:
            if epoch % grid_every == 0 or epoch == config.epochs:
                model, _ = load_model(run.checkpoint, VQVAE)
                grid = recon_grid(originals, reconstruct_images(model, originals))
                tracking.log_image(grid, f"reconstructions/epoch_{epoch:04d}.png")
            return on_epoch_end(epoch, metrics) if on_epoch_end else None

        with run.training(f"training vqvae ({preset_name})", epoch_end) as hooks:
            result = train_vqvae(config, train_x, val_x, hooks)
        model = result.model.cpu()
        final = evaluate_vqvae(model, val_x, device="cpu")
        recons = reconstruct_images(model, originals, device="cpu")
        keys = ("mse", "psnr", "utilisation", "perplexity", "effective_usage")
        metrics = {f"final_val_{k}": float(final[k]) for k in keys}
        mlflow.log_metrics(metrics)
        tracking.log_image(recon_grid(originals, recons), "reconstructions/final.png")
        tracking.log_array(originals, "reconstructions/originals.npy")
        tracking.log_array(recons, "reconstructions/reconstructions.npy")
        return run.register(
            "vqvae_model",
            {"checkpoint": run.checkpoint},
            registry.vqvae_signature(config.image_size),
            originals[:1],
            register_as,
            metrics,
            champion_by=ChampionRule("final_val_mse", metrics["final_val_mse"], False, scope_tag="data_key"),
            artifact_name="vqvae",
        )


@task(name="train-vqvae", persist_result=True, cache_key_fn=stage_cache_key)
def train_vqvae_task(
    data_dir: str,
    preset_name: str = "demo",
    epochs: int | None = None,
    overrides: dict | None = None,
    limit: int | None = None,
) -> dict:
    """Train and register a VQ-VAE; returns {run_id, model_uri, version, metrics}."""
    ref = train_vqvae_run(data_dir, preset_name, epochs=epochs, overrides=overrides, limit=limit)
    return ref.__dict__
