"""Tokens of a prepared folder under a registered VQ-VAE, computed once and cached (SPEC P2).

The cache is ``<data>/tokens/<vqvae identity>-<data key>/tokens.npy`` (N, T) with a ``meta.json``; the
prior and atlas stages read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from model.data import load_prepared
from model.train_vqvae import tokenize_images
from model.utils import pick_device
from tasks import registry, tracking
from tasks.progress import bar
from tasks.runs import config_hash


def vqvae_identity(model_uri: str) -> str:
    """A stable identity of a registered VQ-VAE: the run that produced it plus its artifact path."""
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    return config_hash(info.run_id, info.artifact_path, info.model_uuid)


def tokenize_dataset(vqvae_uri: str, data_dir: str | Path) -> Path:
    """Tokenize every image of a prepared folder once per VQ-VAE; returns the cache folder."""
    tracking.setup()
    data = load_prepared(data_dir)
    folder = Path(data_dir) / "tokens" / f"{vqvae_identity(vqvae_uri)}-{data.key}"
    if (folder / "meta.json").exists():
        return folder
    vqvae, _ = registry.load_vqvae(vqvae_uri)
    vqvae.to(pick_device())
    with bar(total=len(data.images), desc="tokenizing", unit="img") as pbar:
        tokens = tokenize_images(vqvae, data.images, progress=pbar.update)
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "tokens.npy", tokens)
    meta = {
        "vqvae_uri": vqvae_uri,
        "data_key": data.key,
        "codebook_size": vqvae.config.codebook_size,
        "grid": vqvae.config.grid,
        "n": len(tokens),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder)
    return folder
