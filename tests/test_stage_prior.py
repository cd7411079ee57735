"""Prior stage, sampling grids, the registered sampler and `galaxy sample`, against a real MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tasks.prior import train_prior_run
from tasks.samples import log_sampling_grids
from tasks.tokens import tokenize_dataset
from tasks.vqvae import train_vqvae_run
from tests.conftest import TINY_PRIOR, TINY_VQVAE

GALAXY = str(Path(sys.executable).with_name("galaxy"))


@pytest.fixture
def trained(mlflow_store, tiny_data):
    vq = train_vqvae_run(tiny_data, "demo", epochs=1, overrides=TINY_VQVAE)
    pr = train_prior_run(vq.model_uri, tiny_data, "demo", epochs=2, overrides=TINY_PRIOR)
    log_sampling_grids(pr.run_id, pr.model_uri)
    return vq, pr, tiny_data


def test_prior_run_grids_and_registered_sampler(trained):
    vq, pr, data = trained
    run = mlflow.get_run(pr.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.vocab_size"] == "32" and run.data.params["model.grid_h"] == "8"  # read from the VQ-VAE
    for key in ("val_bits_per_token", "unigram_bits_per_token", "tokens_per_s"):
        assert key in run.data.metrics
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(pr.run_id, "val_bits_per_token")] == [1, 2]
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=pr.run_id, artifact_path="samples")}
    expected = {"unconditional", "cfg_1", "cfg_3", "cfg_9", "cfg_100", "top_k_5", "top_p_0.8", "temperature_sweep", "tsne_generated"}
    assert {f"samples/{n}.png" for n in expected} == names
    # P5: the sampler loads by alias and returns uint8 images, reproducibly per seed
    model = mlflow.pyfunc.load_model("models:/galaxy-sampler@champion")
    images = model.predict(np.array([5, 6, -1]), params={"cfg_scale": 3.0, "seed": 7, "num_samples": 2})
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    again = model.predict(np.array([5, 6, -1]), params={"cfg_scale": 3.0, "seed": 7, "num_samples": 2})
    np.testing.assert_array_equal(images, again)


def test_tokens_are_cached_per_vqvae(trained):
    vq, _, data = trained
    folder = tokenize_dataset(vq.model_uri, data)
    stamp = (folder / "tokens.npy").stat().st_mtime_ns
    assert tokenize_dataset(vq.model_uri, data) == folder
    assert (folder / "tokens.npy").stat().st_mtime_ns == stamp
    tokens = np.load(folder / "tokens.npy")
    assert tokens.shape == (120, 64) and tokens.dtype == np.uint16 and tokens.max() < 32


def run_sample(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GALAXY_PROGRESS": "0"}
    return subprocess.run([GALAXY, "sample", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_sample_command_and_its_bad_input(trained, tmp_path):
    ok = run_sample("--model", "models:/galaxy-sampler@champion", "--classes", "5,edge-on with bulge,none", "--n", "3", "--cfg", "3", "--out", "grid.png", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cases = [
        (["--classes", "12"], "unknown class '12'"),
        (["--classes", "spiral-ish"], "unknown class 'spiral-ish'"),
        (["--cfg", "-1"], "--cfg: -1.0 is outside 0-100"),
        (["--temperature", "0"], "--temperature: 0.0 is outside"),
        (["--top-p", "1.5"], "--top-p: 1.5 is outside (0, 1]"),
        (["--top-p", "0"], "--top-p: 0.0 is outside (0, 1]"),
        (["--model", "models:/galaxy-sampler/99"], "models:/galaxy-sampler/99: no such model"),
        (["--model", "models:/nothing@champion"], "models:/nothing@champion: no such model"),
    ]
    for extra, needle in cases:
        args = ["--model", "models:/galaxy-sampler@champion", "--out", "bad.png", *extra]
        proc = run_sample(*args, cwd=tmp_path)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and needle in proc.stderr, (extra, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "bad.png").exists()
