"""The VQ-VAE stage against a real MLflow store: params, metrics, figures, tags, registry, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from tasks.faults import EXIT_CODE
from tasks.registry import load_vqvae
from tasks.vqvae import train_vqvae_run
from tests.conftest import TINY_VQVAE, make_galaxy10


def artifact(run_id: str, path: str) -> np.ndarray:
    return np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def test_run_logs_everything_and_registered_model_reproduces(mlflow_store, tiny_data):
    ref = train_vqvae_run(tiny_data, "demo", epochs=2, overrides=TINY_VQVAE)
    run = mlflow.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.codebook_size"] == "32" and run.data.params["model.epochs"] == "2"
    assert run.data.params["model_grid"] == "8"  # derived: 32 px / 2**2
    assert {"git_commit", "data_key", "data_blake3", "device", "synthetic"} <= set(run.data.tags)
    history = mlflow.MlflowClient().get_metric_history(ref.run_id, "val_psnr")
    assert [m.step for m in history] == [1, 2]
    for key in ("val_mse", "val_utilisation", "val_perplexity", "train_loss"):
        assert key in run.data.metrics
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=ref.run_id, artifact_path="reconstructions")}
    assert {"reconstructions/epoch_0002.png", "reconstructions/final.png"} <= names
    # V4: the registered model, loaded by alias, reproduces the logged reconstructions exactly
    assert ref.model_uri == "models:/galaxy-vqvae/1"
    loaded = mlflow.pyfunc.load_model("models:/galaxy-vqvae@champion")
    originals = artifact(ref.run_id, "reconstructions/originals.npy")
    np.testing.assert_array_equal(loaded.predict(originals), artifact(ref.run_id, "reconstructions/reconstructions.npy"))
    indices = loaded.predict(originals, params={"output": "indices"})
    assert indices.shape == (len(originals), 8, 8) and indices.max() < 32
    vqvae, ckpt = load_vqvae("models:/galaxy-vqvae/1")
    assert not vqvae.training and ckpt["epoch"] == 2
    # the same call again: the run is complete, nothing is trained or registered again
    again = train_vqvae_run(tiny_data, "demo", epochs=2, overrides=TINY_VQVAE)
    assert again.already_complete and (again.run_id, again.model_uri) == (ref.run_id, ref.model_uri)
    assert len(mlflow.MlflowClient().search_model_versions("name='galaxy-vqvae'")) == 1


def test_champion_alias_follows_the_best_version(mlflow_store, tiny_data):
    first = train_vqvae_run(tiny_data, "demo", epochs=1, overrides={**TINY_VQVAE, "lr": 1e-6})
    second = train_vqvae_run(tiny_data, "demo", epochs=3, overrides={**TINY_VQVAE, "lr": 3e-3})
    champion = mlflow.MlflowClient().get_model_version_by_alias("galaxy-vqvae", "champion")
    best = min((first, second), key=lambda r: r.metrics["final_val_mse"])
    assert str(champion.version) == best.version


def test_killed_run_resumes_from_its_checkpoint(mlflow_store):
    src = make_galaxy10(mlflow_store / "src.h5", n=600, side=64)
    env = {**os.environ, "GALAXY_PROGRESS": "0"}
    galaxy = str(Path(sys.executable).with_name("galaxy"))
    subprocess.run([galaxy, "data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p"], check=True, env=env, capture_output=True)
    args = [galaxy, "train", "vqvae", "--data", "p", "--epochs", "6"] + [
        f"--set={k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in TINY_VQVAE.items()
    ]
    killed = subprocess.run(args, env={**env, "GALAXY_FAIL_AFTER_EPOCH": "2"}, capture_output=True, text=True)
    assert killed.returncode == EXIT_CODE, killed.stderr  # died right after epoch 2's checkpoint, like a SIGKILL
    (checkpoint,) = Path("runs").glob("vqvae-*/checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    run_id = json.loads((checkpoint.parent / "run.json").read_text())["run_id"]
    assert mlflow.get_run(run_id).info.status == "RUNNING"  # nothing ended it

    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert run_id in again.stdout  # the same MLflow run carried on
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_mse")]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 6


def test_bad_model_uri_is_one_line(mlflow_store):
    from model.errors import UserError

    with pytest.raises(UserError, match="models:/galaxy-vqvae/9: no such model"):
        load_vqvae("models:/galaxy-vqvae/9")
