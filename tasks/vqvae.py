"""VQ-VAE stage: train on a prepared folder, log everything to MLflow, register `galaxy-vqvae`.

A run's checkpoint lives under ``runs/vqvae-<config hash>/`` in the working folder (``GALAXY_RUNS``
overrides it) beside the MLflow run id, so the same command after a kill resumes both the weights
and the MLflow run from the last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
from prefect import task

from model.data import load_prepared
from model.errors import UserError
from model.train_vqvae import evaluate_vqvae, reconstruct_images, train_vqvae
from model.utils import image_grid, pick_device
from model.vqvae import load_vqvae, preset
from tasks import faults, tracking
from tasks.cache import stage_cache_key
from tasks.progress import bar

EXPERIMENT = "galaxy-vqvae"
MODEL_NAME = "galaxy-vqvae"
GRID_IMAGES = 8  # validation images in the logged reconstruction grids
PYFUNC_CODE = Path(__file__).with_name("pyfunc") / "vqvae_model.py"


@dataclass(frozen=True)
class ModelRef:
    """What a training stage hands on: its MLflow run, the registered model URI and version, key metrics."""

    run_id: str
    model_uri: str
    version: str
    metrics: dict[str, float]


def runs_dir() -> Path:
    """Where resumable checkpoints live: $GALAXY_RUNS, else ./runs."""
    return Path(os.environ.get("GALAXY_RUNS", "runs"))


def config_hash(*parts: Any) -> str:
    """A short stable hash of configs and data identity (names a resumable run folder)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def recon_grid(originals: np.ndarray, recons: np.ndarray) -> np.ndarray:
    """Originals in the top row, their reconstructions below: one (H', W', 3) uint8 image."""
    return image_grid(np.concatenate([originals, recons]), nrow=len(originals))


def vqvae_signature(size: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 3))]),
        params=ParamSchema([ParamSpec("output", "string", "reconstruction")]),
    )


def promote(name: str, version: str, metric: str, value: float, higher_is_better: bool) -> bool:
    """Alias the new version 'champion' when it beats the current champion on ``metric`` (or there is none).

    ('latest' is reserved by MLflow: ``models:/name/latest`` always means the newest version.)
    """
    client = mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, "champion")
        best = client.get_run(champion.run_id).data.metrics.get(metric)
    except mlflow.exceptions.MlflowException:
        best = None
    better = best is None or (value > best if higher_is_better else value < best)
    if better:
        client.set_registered_model_alias(name, "champion", version)
    return better


def log_model(checkpoint: Path, size: int, name: str = "vqvae", register_as: str | None = MODEL_NAME) -> tuple[str, str]:
    """Log the pyfunc (models-from-code + checkpoint artifact) to the active run; returns (model URI, version)."""
    return tracking.log_pyfunc(name, PYFUNC_CODE, {"checkpoint": checkpoint}, vqvae_signature(size), register_as)


def train_vqvae_run(
    data_dir: str | Path,
    preset_name: str = "demo",
    *,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    nested: bool = False,
    register_as: str | None = MODEL_NAME,
    on_epoch_end: Callable[[int, dict], Any] | None = None,
    extra_tags: dict[str, str] | None = None,
    resume: bool = True,
    experiment: str = EXPERIMENT,
    run_folder: str | Path | None = None,
) -> ModelRef:
    """Train, evaluate, log and register one VQ-VAE; returns its run and registered model.

    ``run_folder`` overrides where the resumable checkpoint lives (default: a folder named by the
    config hash under ``runs_dir()``); ``experiment`` names the MLflow experiment (sweeps put their
    trials beside their parent run).
    """
    tracking.setup()
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    try:
        model_cfg, train_cfg = preset(preset_name, **overrides)
    except ValueError as err:
        raise UserError(f"preset {preset_name}", str(err)) from None
    if model_cfg.image_size != data.meta["size"]:
        raise UserError(data_dir, f"images are {data.meta['size']} px but preset {preset_name!r} expects {model_cfg.image_size}")
    train_x, _ = data.subset("train", limit)
    val_x, _ = data.subset("val", limit and max(limit // 8, GRID_IMAGES))
    device = pick_device(train_cfg.device)

    folder = Path(run_folder) if run_folder is not None else runs_dir() / f"vqvae-{config_hash(model_cfg.to_dict(), train_cfg.to_dict(), data.key, limit, tracking.tracking_uri())}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, state_file = folder / "checkpoint.pt", folder / "mlflow_run.json"
    previous = json.loads(state_file.read_text())["run_id"] if resume and state_file.exists() and checkpoint.exists() else None
    if not resume:
        checkpoint.unlink(missing_ok=True)

    tags = tracking.base_tags(data.meta, device.type, stage="vqvae", preset=preset_name, **(extra_tags or {}))
    with tracking.run(experiment, tracking.run_name(f"vqvae-{preset_name}", data.meta), tags, nested=nested, run_id=previous) as active:
        run_id = active.info.run_id
        state_file.write_text(json.dumps({"run_id": run_id}))
        if previous is None:
            mlflow.log_params(
                tracking.flatten({"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "data": {"dir": str(data.root), "key": data.key, "n_train": len(train_x), "n_val": len(val_x)}, "preset": preset_name})
            )
            mlflow.log_params({"model.grid": model_cfg.grid, "model.seq_len": model_cfg.seq_len})
        originals = val_x[:GRID_IMAGES]
        grid_every = max(1, train_cfg.epochs // 10)
        metric_log = tracking.MetricLogger()

        def epoch_end(epoch: int, metrics: dict) -> Any:
            faults.after_epoch(epoch)  # GALAXY_FAIL_AFTER_EPOCH: die here, as a kill would (tests)
            if epoch % grid_every == 0 or epoch == train_cfg.epochs:
                model, _ = load_vqvae(checkpoint)
                tracking.log_image(recon_grid(originals, reconstruct_images(model, originals)), f"reconstructions/epoch_{epoch:04d}.png")
            return on_epoch_end(epoch, metrics) if on_epoch_end else None

        with bar(total=None, desc=f"training vqvae ({preset_name})", unit="step") as pbar:

            def progress(done: int, total: int) -> None:
                pbar.total = total
                pbar.update(done - pbar.n)

            result = train_vqvae(
                model_cfg, train_cfg, train_x, val_x,
                log=metric_log, checkpoint_path=checkpoint, resume=resume, progress=progress, on_epoch_end=epoch_end,
            )
        model = result.model.cpu()
        final = evaluate_vqvae(model, val_x, device="cpu")
        recons = reconstruct_images(model, originals, device="cpu")
        final_metrics = {f"final_val_{k}": float(final[k]) for k in ("mse", "psnr", "utilisation", "perplexity", "effective_usage")}
        mlflow.log_metrics(final_metrics)
        tracking.log_image(recon_grid(originals, recons), "reconstructions/final.png")
        tracking.log_array(originals, "reconstructions/originals.npy")
        tracking.log_array(recons, "reconstructions/reconstructions.npy")
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
        model_uri, version = log_model(checkpoint, model_cfg.image_size, register_as=register_as)
        if register_as:
            mlflow.set_tag("registered_model", f"{register_as}/{version}")
            promote(register_as, version, "final_val_mse", final_metrics["final_val_mse"], higher_is_better=False)
    return ModelRef(run_id=run_id, model_uri=model_uri, version=version, metrics=final_metrics)


def load_vqvae_from_uri(model_uri: str):
    """The torch VQ-VAE inside a registered `galaxy-vqvae` pyfunc (eval mode, CPU), and its checkpoint dict."""
    wrapper = tracking.unwrap_pyfunc(model_uri, "vqvae", MODEL_NAME)
    return wrapper.vqvae.cpu().eval(), wrapper.checkpoint


@task(name="train-vqvae", persist_result=True, cache_key_fn=stage_cache_key)
def train_vqvae_task(
    data_dir: str, preset_name: str = "demo", epochs: int | None = None, overrides: dict | None = None, limit: int | None = None
) -> dict:
    """Train and register a VQ-VAE; returns {run_id, model_uri, version, metrics}."""
    ref = train_vqvae_run(data_dir, preset_name, epochs=epochs, overrides=overrides, limit=limit)
    return ref.__dict__
