"""The atlas stage against a real MLflow store: every figure and number lands in one run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from model.errors import UserError
from tasks.atlas import atlas_run
from tasks.vqvae import train_vqvae_run
from tests.conftest import TINY_VQVAE


def test_atlas_logs_all_figures_and_metrics(mlflow_store, tiny_data):
    vq = train_vqvae_run(tiny_data, "demo", epochs=1, overrides=TINY_VQVAE)
    result = atlas_run(vq.model_uri, tiny_data, codes=[3, 31])
    run = mlflow.get_run(result["run_id"])
    m = run.data.metrics
    for key in ("utilisation", "perplexity", "effective_usage", "knn_accuracy", "knn_chance", "nmi", "nmi_chance"):
        assert key in m
    assert 0 < m["utilisation"] <= 1 and 1 <= m["perplexity"] <= 32
    assert m["effective_usage"] == pytest.approx(m["perplexity"] / 32)
    assert m["knn_chance"] == pytest.approx(0.1)  # 12 images in each of 10 classes
    assert run.data.params["panel_codes"].endswith("3,31")
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=result["run_id"], artifact_path="atlas")}
    for figure in ("code_frequency", "heads_tails", "code_panels", "tsne_atlas", "separability", "random_codes"):
        assert f"atlas/{figure}.png" in names
    with pytest.raises(UserError, match="code 32 is outside 0-31"):
        atlas_run(vq.model_uri, tiny_data, codes=[32])

    env = {**os.environ, "GALAXY_PROGRESS": "0"}
    cli = [str(Path(sys.executable).with_name("galaxy")), "atlas", "--vqvae", vq.model_uri, "--data", str(tiny_data)]
    ok = subprocess.run(cli + ["--codes", "1,2"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "utilisation" in ok.stdout, ok.stderr
    bad = subprocess.run(cli + ["--codes", "1,x"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --codes") and "Traceback" not in bad.stderr
