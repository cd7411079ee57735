"""Prior stage: tokenize once with the frozen VQ-VAE, train the prior, log sampling grids, register the sampler.

Tokens are cached under ``<data>/tokens/<vqvae identity>/`` (one compact array plus labels and split), so
a second prior on the same VQ-VAE and data never tokenizes again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
from prefect import task

from model.data import load_prepared
from model.galaxy10 import CLASS_NAMES, NUM_CLASSES
from model.prior import prior_preset, save_prior
from model.sampling import sample
from model.train_prior import train_prior
from model.utils import pick_device, uint8_to_unit
from model.vqvae import VQVAE, evaluating
from tasks.retry import retry_on_io
from tasks import faults, tracking
from tasks.cache import stage_cache_key
from tasks.progress import bar
from tasks.vqvae import ModelRef, config_hash, load_vqvae_from_uri, promote, runs_dir

EXPERIMENT = "galaxy-prior"
MODEL_NAME = "galaxy-sampler"
PYFUNC_CODE = Path(__file__).with_name("pyfunc") / "sampler_model.py"


# --------------------------------------------------------------------------------------------------
# Tokenizing


def vqvae_identity(model_uri: str) -> str:
    """A stable identity of a registered VQ-VAE: the run that produced it plus its artifact path."""
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    return config_hash(info.run_id, info.artifact_path, info.model_uuid)


@torch.no_grad()
def tokenize_images(vqvae: VQVAE, images: np.ndarray, batch_size: int = 256, progress=None) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, T) code indices, the VQ-VAE in eval mode (its codebook never moves)."""
    device = next(vqvae.parameters()).device
    dtype = np.uint16 if vqvae.config.codebook_size <= 65536 else np.int32
    out = np.empty((len(images), vqvae.config.seq_len), dtype=dtype)
    with evaluating(vqvae):
        for start in range(0, len(images), batch_size):
            x = uint8_to_unit(torch.from_numpy(np.array(images[start : start + batch_size])).to(device))  # (B, 3, S, S)
            out[start : start + len(x)] = vqvae.tokenize(x).reshape(len(x), -1).cpu().numpy()  # (B, h*w)
            if progress:
                progress(len(x))
    return out


def tokenize_dataset(vqvae_uri: str, data_dir: str | Path) -> Path:
    """Tokenize every image of a prepared folder once per VQ-VAE; returns the cache folder."""
    tracking.setup()
    data = load_prepared(data_dir)
    folder = Path(data_dir) / "tokens" / f"{vqvae_identity(vqvae_uri)}-{data.key}"
    if (folder / "meta.json").exists():
        return folder
    vqvae, _ = load_vqvae_from_uri(vqvae_uri)
    vqvae.to(pick_device())
    with bar(total=len(data.images), desc="tokenizing", unit="img") as pbar:
        tokens = tokenize_images(vqvae, data.images, progress=pbar.update)
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "tokens.npy", tokens)
    (tmp / "meta.json").write_text(json.dumps({
        "vqvae_uri": vqvae_uri, "data_key": data.key, "codebook_size": vqvae.config.codebook_size,
        "grid": vqvae.config.grid, "n": len(tokens),
    }, indent=2))
    os.replace(tmp, folder)
    return folder


# --------------------------------------------------------------------------------------------------
# Training and registering


def sampler_signature() -> ModelSignature:
    """Input: class labels (-1 = unconditional), one image each; params: the sampling settings."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        params=ParamSchema([
            ParamSpec("num_samples", "long", 1),
            ParamSpec("cfg_scale", "double", 3.0),
            ParamSpec("temperature", "double", 1.0),
            ParamSpec("top_k", "long", 0),
            ParamSpec("top_p", "double", 1.0),
            ParamSpec("seed", "long", 0),
        ]),
    )


def log_sampler(prior_ckpt: Path, vqvae_ckpt: Path, register_as: str | None = MODEL_NAME) -> tuple[str, str]:
    """Log the VQ-VAE + prior pyfunc (models-from-code) to the active run; returns (URI, version)."""
    artifacts = {"prior": prior_ckpt, "vqvae": vqvae_ckpt}
    return tracking.log_pyfunc("sampler", PYFUNC_CODE, artifacts, sampler_signature(), register_as)


def train_prior_run(
    vqvae_uri: str,
    data_dir: str | Path,
    preset_name: str = "demo",
    *,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    grids: bool = True,
    register_as: str | None = MODEL_NAME,
    resume: bool = True,
) -> ModelRef:
    """Train a prior on the VQ-VAE's codes of a prepared folder, log it, the grids and the sampler."""
    tracking.resolve_model_uri(vqvae_uri)
    data = load_prepared(data_dir)
    vqvae, vqvae_ckpt = load_vqvae_from_uri(vqvae_uri)
    vc = vqvae.config
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    config, train_cfg = prior_preset(preset_name, vc.codebook_size, vc.grid, vc.grid, **overrides)
    tokens_dir = tokenize_dataset(vqvae_uri, data_dir)
    tokens = np.load(tokens_dir / "tokens.npy", mmap_mode="r")
    train_idx, val_idx = data.indices("train")[:limit], data.indices("val")[: limit and max(limit // 8, 8)]
    x_train, y_train = np.asarray(tokens[train_idx]), data.labels[train_idx].astype(np.int64)
    x_val, y_val = np.asarray(tokens[val_idx]), data.labels[val_idx].astype(np.int64)
    device = pick_device(train_cfg.device)

    folder = runs_dir() / f"prior-{config_hash(config.to_dict(), train_cfg.to_dict(), tokens_dir.name, limit, tracking.tracking_uri())}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, state_file = folder / "checkpoint.pt", folder / "mlflow_run.json"
    previous = json.loads(state_file.read_text())["run_id"] if resume and state_file.exists() and checkpoint.exists() else None
    if not resume:
        checkpoint.unlink(missing_ok=True)

    tags = tracking.base_tags(data.meta, device.type, stage="prior", preset=preset_name, vqvae_uri=vqvae_uri)
    with tracking.run(EXPERIMENT, tracking.run_name(f"prior-{preset_name}", data.meta), tags, run_id=previous) as active:
        run_id = active.info.run_id
        state_file.write_text(json.dumps({"run_id": run_id}))
        if previous is None:
            mlflow.log_params(tracking.flatten({
                "model": config.to_dict(), "train": train_cfg.to_dict(), "preset": preset_name,
                "data": {"dir": str(data.root), "key": data.key, "n_train": len(x_train), "n_val": len(x_val)},
                "vqvae_uri": vqvae_uri,
            }))
        with bar(total=None, desc=f"training prior ({preset_name})", unit="step") as pbar:

            def progress(done: int, total: int) -> None:
                pbar.total = total
                pbar.update(done - pbar.n)

            result = train_prior(
                config, train_cfg, x_train, y_train, x_val, y_val,
                log=tracking.MetricLogger(), checkpoint_path=checkpoint, resume=resume, progress=progress,
                on_epoch_end=faults.after_epoch,  # GALAXY_FAIL_AFTER_EPOCH (tests)
            )
        final = result.final
        metrics = {k: float(final[k]) for k in ("val_bits_per_token", "unigram_bits_per_token", "train_bits_per_token") if k in final}
        mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items()})
        prior_file = folder / "prior.pt"
        save_prior(prior_file, result.model.cpu())
        vqvae_file = folder / "vqvae.pt"
        torch.save({k: v for k, v in vqvae_ckpt.items() if k in ("model", "model_config", "train_config", "epoch")}, vqvae_file)
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
        model_uri, version = log_sampler(prior_file, vqvae_file, register_as)
        if register_as:
            mlflow.set_tag("registered_model", f"{register_as}/{version}")
            if "val_bits_per_token" in metrics:
                promote(register_as, version, "final_val_bits_per_token", metrics["val_bits_per_token"], higher_is_better=False)
    ref = ModelRef(run_id=run_id, model_uri=model_uri, version=version, metrics=metrics)
    if grids:
        log_sampling_grids(ref.run_id, ref.model_uri)
    return ref


def load_sampler(model_uri: str):
    """(prior, vqvae) torch modules inside a registered galaxy-sampler pyfunc, in eval mode on CPU."""
    wrapper = tracking.unwrap_pyfunc(model_uri, "prior", MODEL_NAME)
    return wrapper.prior, wrapper.vqvae


# --------------------------------------------------------------------------------------------------
# Sampling grids (P4)

GRID_CFG = (1.0, 3.0, 9.0, 100.0)
GRID_TEMPERATURES = (0.5, 0.7, 1.0, 1.2, 1.5, 2.0, 3.0)
PER_CLASS = 6  # images per class row
TSNE_PER_CLASS = 30


def class_rows(images: np.ndarray, per_row: int) -> list[np.ndarray]:
    return [images[i * per_row : (i + 1) * per_row] for i in range(len(images) // per_row)]


def log_sampling_grids(run_id: str, sampler_uri: str, seed: int = 0) -> None:
    """Log every P4 grid under samples/ in the prior's run."""
    from model.atlas import atlas_figure, embed_tsne, labelled_grid_figure

    tracking.setup()
    prior, vqvae = load_sampler(sampler_uri)
    device = pick_device()
    prior.to(device), vqvae.to(device)
    names = [f"{c}: {n}" for c, n in enumerate(CLASS_NAMES)]
    per_class = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    with mlflow.start_run(run_id=run_id), bar(total=None, desc="sampling grids", unit="grid") as pbar:
        s = sample(prior, vqvae, [-1] * 16, seed=seed)
        tracking.log_figure(labelled_grid_figure([s.images[:8], s.images[8:]], ["", ""], "Unconditional samples"), "samples/unconditional.png")
        pbar.update()
        for cfg in GRID_CFG:
            s = sample(prior, vqvae, per_class, cfg_scale=cfg, seed=seed)
            tracking.log_figure(labelled_grid_figure(class_rows(s.images, PER_CLASS), names, f"Conditional samples, cfg_scale {cfg:g}"), f"samples/cfg_{cfg:g}.png")
            pbar.update()
        s = sample(prior, vqvae, per_class, cfg_scale=3.0, top_k=5, seed=seed)
        tracking.log_figure(labelled_grid_figure(class_rows(s.images, PER_CLASS), names, "Top-k 5 (cfg_scale 3)"), "samples/top_k_5.png")
        s = sample(prior, vqvae, per_class, cfg_scale=3.0, top_p=0.8, seed=seed)
        tracking.log_figure(labelled_grid_figure(class_rows(s.images, PER_CLASS), names, "Top-p 0.8 (cfg_scale 3)"), "samples/top_p_0.8.png")
        pbar.update(2)
        rows = []
        for t in GRID_TEMPERATURES:
            rows.append(sample(prior, vqvae, np.arange(NUM_CLASSES), cfg_scale=3.0, temperature=t, seed=seed).images)
        tracking.log_figure(
            labelled_grid_figure(rows, [f"T = {t:g}" for t in GRID_TEMPERATURES], "Temperature sweep (cfg_scale 3)", col_labels=list(CLASS_NAMES)),
            "samples/temperature_sweep.png",
        )
        pbar.update()
        requested = np.repeat(np.arange(NUM_CLASSES), TSNE_PER_CLASS)
        s = sample(prior, vqvae, requested, cfg_scale=3.0, seed=seed + 1)
        embedding = embed_tsne(s.latents.reshape(len(s.latents), -1), perplexity=min(50.0, (len(requested) - 1) / 3), seed=seed)
        tracking.log_figure(atlas_figure(embedding, requested, CLASS_NAMES, "t-SNE of generated latents, coloured by requested class (cfg_scale 3)"), "samples/tsne_generated.png")
        pbar.update()


@task(name="train-prior", persist_result=True, cache_key_fn=stage_cache_key)
def train_prior_task(vqvae_uri: str, data_dir: str, preset_name: str = "demo", epochs: int | None = None, overrides: dict | None = None, limit: int | None = None) -> dict:
    """Train the prior and register the sampler (grids are a separate task); returns {run_id, model_uri, ...}."""
    return train_prior_run(vqvae_uri, data_dir, preset_name, epochs=epochs, overrides=overrides, limit=limit, grids=False).__dict__


@task(name="sampling-grids", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def sampling_grids_task(run_id: str, sampler_uri: str, seed: int = 0) -> str:
    """Log the P4 sampling grids into the prior's run; returns the run id."""
    log_sampling_grids(run_id, sampler_uri, seed)
    return run_id
