"""Shared fixtures: small Galaxy10-format files made in the test, isolated Prefect and MLflow homes."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import tempfile

os.environ.setdefault("GALAXY_PROGRESS", "0")
# Tiny models run far faster on one thread than fighting over two cores (also in the CLI subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Prefect keeps cached task results under PREFECT_HOME: give every test session its own, before prefect loads.
_PREFECT_HOME = tempfile.mkdtemp(prefix="galaxy-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
torch.set_num_threads(1)


def make_galaxy10(path: Path, n: int = 40, side: int = 64, seed: int = 0, **override) -> Path:
    """Write a small file in the official Galaxy10 schema; ``override`` replaces or drops (None) keys."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    blob = np.exp(-((yy - side / 2) ** 2 + (xx - side / 2) ** 2) / (2 * (side / 8) ** 2))
    images = (rng.random((n, 1, 1, 3)) * 200 * blob[None, :, :, None] + rng.random((n, side, side, 3)) * 30).astype(np.uint8)
    arrays = {
        "images": images,
        "ans": (np.arange(n) % 10).astype(np.uint8),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-30, 60, n),
        "redshift": rng.uniform(0.01, 0.3, n).astype(np.float32),
        "pxscale": np.full(n, 0.262, dtype=np.float32),
    }
    arrays.update(override)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


@pytest.fixture
def g10(tmp_path: Path) -> Path:
    """A valid 40-image, 64 px Galaxy10-format file."""
    return make_galaxy10(tmp_path / "g10.h5")


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect server (SQLite under the session's PREFECT_HOME) for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> Path:
    """A fresh SQLite MLflow store in the test's folder, which is also the working folder."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    (tmp_path / "mlflow").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return tmp_path


#: A VQ-VAE small enough to train in a second on 32 px images.
TINY_VQVAE = dict(image_size=32, widths=(8, 16), embedding_dim=8, codebook_size=32, batch_size=16)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A prepared 32 px folder of 120 images (12 per class)."""
    from model.data import prepare

    src = make_galaxy10(tmp_path / "src.h5", n=120, side=64)
    return prepare(src, tmp_path / "prepared", size=32).out

#: A prior small enough to train in seconds on the tiny VQ-VAE's 8x8 codes.
TINY_PRIOR = dict(dim=16, heads=2, layers=1, batch_size=16)
