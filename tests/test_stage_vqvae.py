"""The VQ-VAE stage against a real MLflow store: params, metrics, figures, tags, registry, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from tasks.vqvae import load_vqvae_from_uri, train_vqvae_run
from tests.conftest import TINY_VQVAE, make_galaxy10


def artifact(run_id: str, path: str) -> np.ndarray:
    return np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def test_run_logs_everything_and_registered_model_reproduces(mlflow_store, tiny_data):
    ref = train_vqvae_run(tiny_data, "demo", epochs=2, overrides=TINY_VQVAE)
    run = mlflow.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.codebook_size"] == "32" and run.data.params["train.epochs"] == "2"
    assert run.data.params["model.grid"] == "8"  # derived: 32 px / 2**2
    assert {"git_commit", "data_key", "data_sha256", "device", "synthetic"} <= set(run.data.tags)
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
    vqvae, ckpt = load_vqvae_from_uri("models:/galaxy-vqvae/1")
    assert not vqvae.training and ckpt["epoch"] == 2


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
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = None
    deadline = time.time() + 240
    while time.time() < deadline and checkpoint is None:
        found = list(Path("runs").glob("vqvae-*/checkpoint.pt"))
        checkpoint = found[0] if found else None
        time.sleep(0.05)
    assert checkpoint is not None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= done_at_kill < 6
    run_id = json.loads((checkpoint.parent / "mlflow_run.json").read_text())["run_id"]

    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert run_id in again.stdout  # the same MLflow run carried on
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_mse")]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 6


def test_bad_model_uri_is_one_line(mlflow_store):
    from model.errors import UserError

    with pytest.raises(UserError, match="models:/galaxy-vqvae/9: no such model"):
        load_vqvae_from_uri("models:/galaxy-vqvae/9")
