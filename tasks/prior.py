"""Prior stage: tokenize once with the frozen VQ-VAE, train the prior, register the sampler (VQ-VAE + prior).

Tokens come from ``tasks.tokens`` (cached: a second prior on the same VQ-VAE and data never tokenizes
again). The run is resumable (``tasks.runs``). With ``condition`` in the overrides (``--condition redshift``)
the prior also reads that column of the prepared data (NaN where unknown) and its ``condition_range`` is set
from the training split's values before the run starts, so the logged params hold it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import get_model_info
from prefect import task

from model.checkpoint import save_checkpoint
from model.config import from_preset
from model.data import load_prepared
from model.prior import PRESETS
from model.train_prior import condition_range, read_condition_column, train_prior
from tasks import registry
from tasks.cache import stage_cache_key
from tasks.champion import ChampionRule
from tasks.runs import TrainingRun
from tasks.tokens import tokenize_dataset

EXPERIMENT = "galaxy-prior"


def train_prior_run(
    vqvae_uri: str,
    data_dir: str | Path,
    preset_name: str = "demo",
    *,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    register_as: str | None = registry.SAMPLER_MODEL,
    resume: bool = True,
) -> registry.ModelRef:
    """Train a prior on the VQ-VAE's codes of a prepared folder, log it and register the sampler."""
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    train_idx, val_idx = data.indices("train")[:limit], data.indices("val")[: limit and max(limit // 8, 8)]
    if epochs is not None:
        overrides["epochs"] = epochs
    requested = from_preset(PRESETS, preset_name, **overrides)  # a bad setting or column fails before any loading
    column, condition_params = None, {}
    if requested.condition is not None:
        column = read_condition_column(data.root, requested.condition, len(data.labels))  # (N,), NaN = unknown
        if requested.condition_range is None:
            overrides["condition_range"] = condition_range(column[train_idx], requested.condition)
        condition_params = {
            "n_train_condition_missing": int(np.isnan(column[train_idx]).sum()),
            "n_val_condition_missing": int(np.isnan(column[val_idx]).sum()),
        }
    vqvae, _ = registry.load_vqvae(vqvae_uri)
    vc = vqvae.config
    config = from_preset(PRESETS, preset_name, vocab_size=vc.codebook_size, grid_h=vc.grid, grid_w=vc.grid, **overrides)
    tokens_dir = tokenize_dataset(vqvae_uri, data_dir, pose=config.pose)
    tokens = np.load(tokens_dir / "tokens.npy", mmap_mode="r")
    x_train, y_train = np.asarray(tokens[train_idx]), data.labels[train_idx].astype(np.int64)
    x_val, y_val = np.asarray(tokens[val_idx]), data.labels[val_idx].astype(np.int64)
    v_train, v_val = (column[train_idx], column[val_idx]) if column is not None else (None, None)
    scope = registry.tokenizer_scope(get_model_info(vqvae_uri).run_id, config.condition, config.crop, config.pose)
    run = TrainingRun(
        "prior",
        EXPERIMENT,
        config,
        data,
        preset_name,
        identity=(tokens_dir.name, limit),
        resume=resume,
        data_params={"n_train": len(x_train), "n_val": len(x_val), **condition_params},
        params={"vqvae_uri": vqvae_uri},
        tags={"vqvae_uri": vqvae_uri, registry.TOKENIZER_TAG: scope},
    )
    if run.complete:
        return run.complete
    with run:
        with run.training(f"training prior ({preset_name})") as hooks:
            result = train_prior(config, x_train, y_train, x_val, y_val, hooks, train_values=v_train, val_values=v_val)
        keys = (
            "val_bits_per_token",
            "unigram_bits_per_token",
            "train_bits_per_token",
            "val_bits_per_token_class",
            "val_bits_per_token_condition",
        )
        metrics = {k: float(result.metrics[k]) for k in keys if k in result.metrics}
        mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items()})
        prior_file, vqvae_file = run.folder / "prior.pt", run.folder / "vqvae.pt"
        save_checkpoint(prior_file, result.model.cpu())
        save_checkpoint(vqvae_file, vqvae)
        champion = (  # bits/token compare only in one scope (tokenizer, condition); across them the evaluation decides
            ChampionRule(
                "final_val_bits_per_token",
                metrics["val_bits_per_token"],
                False,
                scope_tag=registry.TOKENIZER_TAG,
                other_scope_wins=False,
            )
            if "val_bits_per_token" in metrics
            else None
        )
        return run.register(
            "sampler_model",
            {"prior": prior_file, "vqvae": vqvae_file},
            registry.sampler_signature(),
            np.array([0], dtype=np.int64),
            register_as,
            metrics,
            champion_by=champion,
            artifact_name="sampler",
        )


@task(name="train-prior", persist_result=True, cache_key_fn=stage_cache_key)
def train_prior_task(
    vqvae_uri: str,
    data_dir: str,
    preset_name: str = "demo",
    epochs: int | None = None,
    overrides: dict | None = None,
    limit: int | None = None,
) -> dict:
    """Train the prior and register the sampler (grids are the samples stage); returns {run_id, model_uri, ...}."""
    return train_prior_run(vqvae_uri, data_dir, preset_name, epochs=epochs, overrides=overrides, limit=limit).__dict__
