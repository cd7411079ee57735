"""The atlas stage against a real MLflow store: every figure and number lands in one run, and the
separability numbers see the classes when the images depend on them."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from model.data import prepare
from model.errors import UserError
from tasks.atlas import atlas_run
from tasks.vqvae import train_vqvae_run
from tests.conftest import TINY_VQVAE, console, make_galaxy10

BAD_CODES = "error: --codes: '1,x' is not a comma-separated list of integers"


def coloured_by_class(n: int = 120, side: int = 64, seed: int = 0) -> np.ndarray:
    """(N, S, S, 3) uint8 images whose colour is their class's (label = index % 10), with a little noise."""
    rng = np.random.default_rng(seed)
    palette = np.array(
        [
            [230, 25, 75],
            [60, 180, 75],
            [255, 225, 25],
            [0, 130, 200],
            [245, 130, 48],
            [145, 30, 180],
            [70, 240, 240],
            [240, 50, 230],
            [128, 128, 0],
            [250, 250, 250],
        ]
    )
    colours = palette[np.arange(n) % 10][:, None, None, :]  # (N, 1, 1, 3)
    return np.clip(colours + rng.normal(0, 8, (n, side, side, 3)), 0, 255).astype(np.uint8)


def test_atlas_logs_all_figures_and_metrics(mlflow_store):
    from cli.main import app

    src = make_galaxy10(mlflow_store / "src.h5", n=120, side=64, images=coloured_by_class())
    data = prepare(src, mlflow_store / "prepared", size=32).out
    vq = train_vqvae_run(data, "demo", epochs=1, overrides=TINY_VQVAE)
    result = CliRunner().invoke(app, ["atlas", "--vqvae", vq.model_uri, "--data", str(data), "--codes", "3,31"])
    assert result.exit_code == 0, result.output
    run_id = result.stdout.split()[1].rstrip(":")  # "run <id>: utilisation ..."
    run = mlflow.get_run(run_id)
    m = run.data.metrics
    for key in ("utilisation", "perplexity", "effective_usage", "knn_accuracy", "knn_chance", "nmi", "nmi_chance"):
        assert key in m, key
    assert f"5-NN accuracy {m['knn_accuracy']:.3f} (chance {m['knn_chance']:.3f})" in result.stdout
    assert 0 < m["utilisation"] <= 1 and 1 <= m["perplexity"] <= 32
    assert m["effective_usage"] == pytest.approx(m["perplexity"] / 32)
    assert m["knn_chance"] == pytest.approx(0.1)  # 12 images in each of 10 classes
    # the colour is the class: its codes separate the classes far above chance
    assert m["knn_accuracy"] > 0.9 and m["nmi"] > 0.8 and m["nmi_chance"] < 0.2
    assert run.data.params["panel_codes"].endswith("3,31")
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="atlas")}
    for figure in ("code_frequency", "heads_tails", "code_panels", "tsne_atlas", "separability", "random_codes"):
        assert f"atlas/{figure}.png" in names
    with pytest.raises(UserError, match="code 32 is outside 0-31"):
        atlas_run(vq.model_uri, data, codes=[32])
    bad = CliRunner().invoke(app, ["atlas", "--vqvae", vq.model_uri, "--data", str(data), "--codes", "1,x"])
    assert bad.exit_code == 2 and bad.stderr.strip() == BAD_CODES
    assert len(mlflow.search_runs(experiment_names=["galaxy-atlas"])) == 1  # bad input made no run


def test_atlas_console_script_user_error(tmp_path):
    proc = console("atlas", "--data", "nowhere", "--codes", "1,x", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == BAD_CODES, proc.stderr
