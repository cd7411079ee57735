"""The VQ-VAE stage against a real MLflow store: params, metrics, figures, tags, registry, champion, resume."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from model.data import load_prepared
from tasks import faults
from tasks.registry import load_vqvae
from tasks.vqvae import train_vqvae_run
from tests.conftest import TINY_VQVAE, cli_settings, console
from tests.test_registry import champion, register


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
    np.testing.assert_array_equal(
        loaded.predict(originals), artifact(ref.run_id, "reconstructions/reconstructions.npy")
    )
    indices = loaded.predict(originals, params={"output": "indices"})
    assert indices.shape == (len(originals), 8, 8) and indices.max() < 32
    vqvae, ckpt = load_vqvae("models:/galaxy-vqvae/1")
    assert not vqvae.training and ckpt["epoch"] == 2
    # the same call again: the run is complete, nothing is trained or registered again
    again = train_vqvae_run(tiny_data, "demo", epochs=2, overrides=TINY_VQVAE)
    assert again.already_complete and (again.run_id, again.model_uri) == (ref.run_id, ref.model_uri)
    assert len(mlflow.MlflowClient().search_model_versions("name='galaxy-vqvae'")) == 1


def test_stage_keeps_a_champion_with_lower_mse(mlflow_store, tiny_data):
    # a champion no real model can beat (MSE 0): the new version must not take the alias
    best = register("galaxy-vqvae", "final_val_mse", 0.0, {"data_key": load_prepared(tiny_data).key})
    mlflow.MlflowClient().set_registered_model_alias("galaxy-vqvae", "champion", best)
    ref = train_vqvae_run(tiny_data, "demo", epochs=1, overrides=TINY_VQVAE)
    assert ref.version != best and ref.metrics["final_val_mse"] > 0.0
    assert champion("galaxy-vqvae") == best


def test_killed_run_resumes_from_its_checkpoint(mlflow_store, tiny_data):
    from cli.main import app

    args = ["train", "vqvae", "--data", str(tiny_data), "--epochs", "4", *cli_settings(TINY_VQVAE)]
    killed = console(*args, env={faults.ENV: "2"})
    assert killed.returncode == faults.EXIT_CODE, killed.stderr
    (checkpoint,) = Path("runs").glob("vqvae-*/checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    run_id = json.loads((checkpoint.parent / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # never ended, as after a kill
    assert [m.step for m in client.get_metric_history(run_id, "val_mse")] == [1, 2]
    assert client.search_model_versions("name='galaxy-vqvae'") == []

    again = CliRunner().invoke(app, args)  # the same command again (in this process)
    assert again.exit_code == 0, again.output
    assert run_id in again.stdout  # the same MLflow run carried on
    assert [m.step for m in client.get_metric_history(run_id, "val_mse")] == [1, 2, 3, 4]  # no epoch twice
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 4
    assert client.get_run(run_id).info.status == "FINISHED"
    assert champion("galaxy-vqvae") == "1"


def test_bad_model_uri_is_one_line(mlflow_store):
    from model.errors import UserError

    with pytest.raises(UserError, match="models:/galaxy-vqvae/9: no such model"):
        load_vqvae("models:/galaxy-vqvae/9")
