"""Tokens of a prepared folder under a registered VQ-VAE, computed once and cached (SPEC P2).

The cache is ``<data>/tokens/<vqvae identity>-<data key>/tokens.npy`` (N, T) with a ``meta.json``; the
prior and atlas stages read it. A pose prior (``PriorConfig.pose``) reads the codes of every image turned to its
canonical pose (``model.pose``), cached beside them in ``<vqvae identity>-<data key>-pose``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from model.data import load_prepared
from model.pose import canonical_pose
from model.train_vqvae import tokenize_images
from model.utils import pick_device
from tasks import registry, tracking
from tasks.progress import bar
from tasks.runs import config_hash

POSE_SUFFIX = "-pose"  # the cache folder of the codes in the canonical pose
CHUNK = 2048  # images read, turned and tokenized at a time (the real file's 17,736 never all in memory)


def vqvae_identity(model_uri: str) -> str:
    """A stable identity of a registered VQ-VAE: the run that produced it plus its artifact path."""
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    return config_hash(info.run_id, info.artifact_path, info.model_uuid)


def tokenize_dataset(vqvae_uri: str, data_dir: str | Path, pose: bool = False) -> Path:
    """Tokenize every image of a prepared folder once per VQ-VAE (``pose``: each turned to its canonical pose
    first); returns the cache folder."""
    tracking.setup()
    data = load_prepared(data_dir)
    folder = Path(data_dir) / "tokens" / f"{vqvae_identity(vqvae_uri)}-{data.key}{POSE_SUFFIX if pose else ''}"
    if (folder / "meta.json").exists():
        return folder
    vqvae, _ = registry.load_vqvae(vqvae_uri)
    vqvae.to(pick_device())
    parts = []
    with bar(total=len(data.images), desc="tokenizing" + (" (canonical pose)" if pose else ""), unit="img") as pbar:
        for s in range(0, len(data.images), CHUNK):
            images = np.asarray(data.images[s : s + CHUNK])  # (B, H, W, 3) uint8
            images = canonical_pose(images)[0] if pose else images
            parts.append(tokenize_images(vqvae, images, progress=pbar.update))
    tokens = np.concatenate(parts) if parts else tokenize_images(vqvae, np.asarray(data.images[:0]))
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "tokens.npy", tokens)
    meta = {
        "vqvae_uri": vqvae_uri,
        "data_key": data.key,
        "codebook_size": vqvae.config.codebook_size,
        "grid": vqvae.config.grid,
        "n": len(tokens),
        "pose": pose,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder)
    return folder
