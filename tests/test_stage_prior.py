"""Prior stage, sampling grids, the registered sampler and `galaxy sample`, against a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from model.checkpoint import save_checkpoint
from model.errors import UserError
from model.prior import ConditionalPrior
from tasks import faults, registry
from tasks.prior import train_prior_run
from tasks.samples import log_sampling_grids
from tasks.tokens import tokenize_dataset
from tasks.vqvae import train_vqvae_run
from tests.conftest import (
    TINY_PRIOR,
    TINY_VQVAE,
    cli_settings,
    console,
    forget_mlflow_store,
    isolate,
    make_store,
    make_tiny_data,
    use_store,
)
from tests.test_registry import champion, register
from tests.test_sampling_batches import allowed_tokens, forcing_prior, tiny_vqvae

SAMPLER = "models:/galaxy-sampler@champion"


Z_SAMPLER = "galaxy-sampler-z"  # the redshift-conditioned prior of the shared store, registered apart


@pytest.fixture(scope="module")  # trains once: scripts/test.sh runs a module whole on one worker
def trained_store(tmp_path_factory, empty_mlflow_db):
    """One store with a VQ-VAE (1 epoch), a prior (2 epochs) and a redshift-conditioned prior (2 epochs, registered
    as galaxy-sampler-z, its sampling grids logged: the class-only prior's are the same code without the redshift
    grid), shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, tmp_path_factory.mktemp("home"), root)
        uri = make_store(root, empty_mlflow_db)
        use_store(uri, mp)
        data = make_tiny_data(root)
        vq = train_vqvae_run(data, "demo", epochs=1, overrides=TINY_VQVAE)
        pr = train_prior_run(vq.model_uri, data, "demo", epochs=2, overrides=TINY_PRIOR)
        z_overrides = {**TINY_PRIOR, "condition": "redshift"}
        pz = train_prior_run(vq.model_uri, data, "demo", epochs=2, overrides=z_overrides, register_as=Z_SAMPLER)
        log_sampling_grids(pz.run_id, pz.model_uri)
    forget_mlflow_store()
    return uri, vq, pr, data, pz


@pytest.fixture
def trained(trained_store, monkeypatch):
    """(VQ-VAE ref, prior ref, data folder) of the shared store, which MLflow now points at."""
    uri, vq, pr, data, _ = trained_store
    use_store(uri, monkeypatch)
    return vq, pr, data


@pytest.fixture
def trained_z(trained_store, monkeypatch):
    """(redshift-conditioned prior ref, data folder) of the shared store, which MLflow now points at."""
    uri, _, _, data, pz = trained_store
    use_store(uri, monkeypatch)
    return pz, data


def test_prior_run_logs_its_numbers(trained):
    vq, pr, data = trained
    run = mlflow.get_run(pr.run_id)
    assert run.info.status == "FINISHED"
    assert (
        run.data.params["model.vocab_size"] == "32" and run.data.params["model.grid_h"] == "8"
    )  # read from the VQ-VAE
    for key in ("val_bits_per_token", "unigram_bits_per_token", "tokens_per_s"):
        assert key in run.data.metrics
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(pr.run_id, "val_bits_per_token")] == [1, 2]
    assert not mlflow.artifacts.list_artifacts(run_id=pr.run_id, artifact_path="samples")  # none logged here


def test_sampling_grids_of_a_prior(trained_z):
    pz, _ = trained_z
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=pz.run_id, artifact_path="samples")}
    expected = {
        "unconditional",
        "cfg_1",
        "cfg_3",
        "cfg_9",
        "cfg_100",
        "top_k_5",
        "top_p_0.8",
        "temperature_sweep",
        "tsne_generated",
        "class_by_redshift",
    }
    assert {f"samples/{n}.png" for n in expected} == names


def test_registered_class_only_sampler_loads_by_alias(trained):
    # P5: the sampler loads by alias and returns uint8 images, reproducibly per seed
    model = mlflow.pyfunc.load_model("models:/galaxy-sampler@champion")
    images = model.predict(np.array([5, 6, -1]), params={"cfg_scale": 3.0, "seed": 7, "num_samples": 2})
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    again = model.predict(np.array([5, 6, -1]), params={"cfg_scale": 3.0, "seed": 7, "num_samples": 2})
    np.testing.assert_array_equal(images, again)


def test_registered_sampler_output_follows_seed_cfg_and_class(mlflow_store):
    # a prior whose tokens are fixed per class up to a coin flip each (tests/test_sampling_batches.py), so that the
    # class, the guidance scale and the seed each visibly change the images
    save_checkpoint(mlflow_store / "vqvae.pt", tiny_vqvae())
    save_checkpoint(mlflow_store / "prior.pt", forcing_prior())
    artifacts = {"prior": mlflow_store / "prior.pt", "vqvae": mlflow_store / "vqvae.pt"}
    with mlflow.start_run():
        uri, _ = registry.log_pyfunc(
            "sampler", "sampler_model", artifacts, registry.sampler_signature(), np.array([0]), "galaxy-sampler"
        )
    model = mlflow.pyfunc.load_model(uri)

    def one(label: int, **params) -> np.ndarray:
        return model.predict(np.array([label]), params={"cfg_scale": 3.0, "seed": 7, **params})[0]

    reference = one(5)
    np.testing.assert_array_equal(one(5), reference)  # same seed, same image
    for changed in (one(5, seed=8), one(5, cfg_scale=0.0), one(6), one(-1)):
        assert not np.array_equal(changed, reference)
    np.testing.assert_array_equal(one(-1, cfg_scale=0.0), one(-1))  # guidance does nothing without a class
    # several labels, each repeated: every row is drawn for its own class, in request order
    s = model.unwrap_python_model().generate(np.array([5, -1, 6]), num_samples=2, cfg_scale=3.0, seed=7)
    for row, label in zip(s.indices, [5, 5, -1, -1, 6, 6]):
        assert set(row.ravel().tolist()) <= allowed_tokens(label)
    np.testing.assert_array_equal(model.predict(np.array([5, -1, 6]), params={"num_samples": 2, "seed": 7}), s.images)


def test_tokens_are_cached_per_vqvae(trained):
    vq, _, data = trained
    folder = tokenize_dataset(vq.model_uri, data)
    stamp = (folder / "tokens.npy").stat().st_mtime_ns
    assert tokenize_dataset(vq.model_uri, data) == folder
    assert (folder / "tokens.npy").stat().st_mtime_ns == stamp
    tokens = np.load(folder / "tokens.npy")
    assert tokens.shape == (120, 64) and tokens.dtype == np.uint16 and tokens.max() < 32


def test_pose_tokens_are_those_of_the_turned_images_cached_apart(trained):
    from model.data import load_prepared
    from model.pose import canonical_pose
    from model.train_vqvae import tokenize_images

    vq, pr, data = trained
    folder = tokenize_dataset(vq.model_uri, data, pose=True)
    assert folder != tokenize_dataset(vq.model_uri, data) and json.loads((folder / "meta.json").read_text())["pose"]
    vqvae, _ = registry.load_vqvae(vq.model_uri)
    turned, elements = canonical_pose(np.asarray(load_prepared(data).images))
    assert len(set(elements.tolist())) > 1  # the tiny set's galaxies lie at several angles
    np.testing.assert_array_equal(np.load(folder / "tokens.npy"), tokenize_images(vqvae, turned))
    # the demo prior models them, and its bits/token count only beside other pose priors
    assert mlflow.get_run(pr.run_id).data.tags[registry.TOKENIZER_TAG] == registry.tokenizer_scope(
        vq.run_id, None, 6, pose=True
    )


def test_sample_command_and_its_bad_input(trained, tmp_path, monkeypatch):
    from cli.main import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    classes = "5,edge-on with bulge,none"
    ok = runner.invoke(
        app, ["sample", "--model", SAMPLER, "--classes", classes, "--n", "3", "--cfg", "3", "--out", "grid.png"]
    )
    assert ok.exit_code == 0, ok.output
    assert "wrote grid.png (9 images)" in ok.stdout
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cases = [
        (["--classes", "12"], "unknown class '12'"),
        (["--classes", "spiral-ish"], "unknown class 'spiral-ish'"),
        (["--classes", ","], "--classes: no class given"),
        (["--n", "0"], "--n: 0 is outside 1-1024"),
        (["--cfg", "-1"], "--cfg: -1.0 is outside 0-100"),
        (["--temperature", "0"], "--temperature: 0.0 is outside"),
        (["--top-k", "-1"], "--top-k: -1 is negative"),
        (["--top-p", "1.5"], "--top-p: 1.5 is outside (0, 1]"),
        (["--top-p", "0"], "--top-p: 0.0 is outside (0, 1]"),
        (["--out", "bad.jpg"], "bad.jpg: the grid is written as PNG"),
        (["--out", "no/such/bad.png"], "no/such: output folder does not exist"),
        (["--model", "models:/galaxy-sampler/99"], "models:/galaxy-sampler/99: no such model"),
        (["--model", "models:/nothing@champion"], "models:/nothing@champion: no such model"),
        (["--model", "models:/galaxy-vqvae/1"], "models:/galaxy-vqvae/1: is not a galaxy-sampler model"),
        (["--redshift", "0.1"], "--redshift: this prior was trained without a condition"),
        (["--redshift", "0.1,abc"], "--redshift: 'abc' is not a number"),
    ]
    for extra, needle in cases:
        result = runner.invoke(app, ["sample", "--model", SAMPLER, "--out", "bad.png", *extra])
        assert result.exit_code == 2, (extra, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (extra, result.stderr)
        assert not list(tmp_path.glob("bad*"))


def test_sample_console_script_user_error(tmp_path):
    proc = console("sample", "--cfg", "-1", "--out", "bad.png", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --cfg: -1.0 is outside 0-100"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def vqvae(mlflow_store, tiny_data):
    """A registered 1-epoch VQ-VAE in a fresh store; returns (its ref, the data folder)."""
    return train_vqvae_run(tiny_data, "demo", epochs=1, overrides=TINY_VQVAE), tiny_data


def test_stage_keeps_a_sampler_champion_with_fewer_bits(vqvae):
    vq, data = vqvae
    # no real prior reaches 0 bits (on the same tokenizer: bits/token compare only there)
    best = register("galaxy-sampler", "final_val_bits_per_token", 0.0, {"tokenizer": vq.run_id})
    mlflow.MlflowClient().set_registered_model_alias("galaxy-sampler", "champion", best)
    ref = train_prior_run(vq.model_uri, data, "demo", epochs=1, overrides=TINY_PRIOR)
    assert ref.version != best and ref.metrics["val_bits_per_token"] > 0.0
    assert champion("galaxy-sampler") == best


def test_killed_prior_resumes_the_same_run(vqvae):
    from cli.main import app

    vq, data = vqvae
    args = [
        "train",
        "prior",
        "--vqvae",
        vq.model_uri,
        "--data",
        str(data),
        "--epochs",
        "4",
        "--no-grids",
        *cli_settings(TINY_PRIOR),
    ]
    killed = console(*args, env={faults.ENV: "2"})
    assert killed.returncode == faults.EXIT_CODE, killed.stderr
    (checkpoint,) = Path("runs").glob("prior-*/checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    run_id = json.loads((checkpoint.parent / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # never ended, as after a kill
    assert [m.step for m in client.get_metric_history(run_id, "val_bits_per_token")] == [1, 2]
    assert client.search_model_versions("name='galaxy-sampler'") == []

    again = CliRunner().invoke(app, args)  # the same command again (in this process)
    assert again.exit_code == 0, again.output
    assert run_id in again.stdout  # the same MLflow run carried on
    assert [m.step for m in client.get_metric_history(run_id, "val_bits_per_token")] == [1, 2, 3, 4]  # no epoch twice
    steps = [m.step for m in client.get_metric_history(run_id, "step_loss")]
    assert steps == sorted(set(steps))  # the per-step loss neither repeats nor goes back
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 4
    assert client.get_run(run_id).info.status == "FINISHED"
    assert champion("galaxy-sampler") == "1"


# ----------------------------------------------------------------------------------------------
# A prior conditioned on redshift (SPEC P6)


def test_conditioned_prior_logs_its_range_and_the_class_by_redshift_grid(trained_z):
    pz, data = trained_z
    run = mlflow.get_run(pz.run_id)
    p = run.data.params
    redshift, split = np.load(data / "redshift.npy"), np.load(data / "split.npy")
    lo, hi = np.percentile(redshift[split == 0], [0.5, 99.5])  # the training split's robust range, by hand
    assert p["model.condition"] == "redshift" and p["data.n_train_condition_missing"] == "0"
    assert json.loads(p["model.condition_range"]) == pytest.approx([lo, hi])
    for key in ("val_bits_per_token_class", "val_bits_per_token_condition", "val_bits_per_token_uncond"):
        assert key in run.data.metrics
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=pz.run_id, artifact_path="samples")}
    assert "samples/class_by_redshift.png" in names and "samples/cfg_3.png" in names


def test_sample_command_takes_redshifts_and_refuses_bad_ones(trained_z, tmp_path, monkeypatch):
    from cli.main import app

    pz, _ = trained_z
    lo, hi = json.loads(mlflow.get_run(pz.run_id).data.params["model.condition_range"])
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["sample", "--model", pz.model_uri, "--n", "2"]
    ok = runner.invoke(app, [*base, "--classes", "5,none", "--redshift", f"{lo},{hi},none", "--out", "grid.png"])
    assert ok.exit_code == 0, ok.output
    assert "wrote grid.png (12 images)" in ok.stdout  # 2 classes x 3 redshifts x 2 images
    for z, needle in [
        ("0.1,abc", "--redshift: 'abc' is not a number"),
        ("inf", "--redshift: 'inf' is not a finite number"),
        (f"{hi + 0.5:g}", f"--redshift: {hi + 0.5:g} is outside the trained range [{lo:.4g}, {hi:.4g}]"),
        (f"{lo},-0.5", f"--redshift: -0.5 is outside the trained range [{lo:.4g}, {hi:.4g}]"),
    ]:
        result = runner.invoke(app, [*base, "--redshift", z, "--out", "bad.png"])
        assert result.exit_code == 2, (z, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0] == f"error: {needle}" or needle in lines[0], (z, result.stderr)
    assert not list(tmp_path.glob("bad*"))


def test_train_prior_refuses_an_unknown_condition_column(tmp_path, tiny_data):
    from cli.main import app

    result = CliRunner().invoke(
        app, ["train", "prior", "--vqvae", "models:/none/1", "--data", str(tiny_data), "--condition", "mass"]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown column 'mass'" in lines[0] and "numeric columns: redshift)" in lines[0]


def test_registered_sampler_takes_redshift_in_params(mlflow_store):
    from tests.test_prior_condition import conditioned

    torch.manual_seed(0)
    prior = ConditionalPrior(conditioned(vocab_size=32, grid_h=8, grid_w=8)).eval()
    with torch.no_grad():  # a condition strong enough to change the tokens
        prior.condition_emb.proj.weight.mul_(200.0)
    save_checkpoint(mlflow_store / "vqvae.pt", tiny_vqvae())
    save_checkpoint(mlflow_store / "prior.pt", prior)
    save_checkpoint(mlflow_store / "plain.pt", forcing_prior())
    uris = {}
    for name in ("prior", "plain"):
        artifacts = {"prior": mlflow_store / f"{name}.pt", "vqvae": mlflow_store / "vqvae.pt"}
        with mlflow.start_run():
            uris[name], _ = registry.log_pyfunc(
                "sampler", "sampler_model", artifacts, registry.sampler_signature(), np.array([0]), None
            )
    model = mlflow.pyfunc.load_model(uris["prior"])
    labels = np.array([5, -1, 6])

    def predict(**params) -> np.ndarray:
        return model.predict(labels, params={"seed": 7, "cfg_scale": 3.0, **params})

    one = predict(redshift=[0.1])
    np.testing.assert_array_equal(one, predict(redshift=[0.1, 0.1, 0.1]))  # one value serves every row
    assert not np.array_equal(one, predict(redshift=[0.3]))  # the value reaches the prior
    assert not np.array_equal(one, predict())  # no value: the null vector
    sampler = model.unwrap_python_model()
    same = sampler.generate(labels, redshift=0.1, seed=7, num_samples=2).indices  # a bare number works here
    per_row = sampler.generate(labels, redshift=[0.1, 0.3, 0.1], seed=7, num_samples=2).indices  # one per label
    np.testing.assert_array_equal(per_row[[0, 1, 4, 5]], same[[0, 1, 4, 5]])  # the rows of z = 0.1 are unchanged
    assert not np.array_equal(per_row[2:4], same[2:4])  # the rows of z = 0.3 follow their own value
    with pytest.raises(UserError, match=r"redshift: 0.5 is outside the trained range \[0, 0.4\]"):
        predict(redshift=[0.5])
    with pytest.raises(UserError, match=r"redshift: give 1 value or one per label \(3\), got 2"):
        predict(redshift=[0.1, 0.2])
    with pytest.raises(mlflow.exceptions.MlflowException, match="redshift"):
        predict(redshift=["abc"])  # MLflow's schema refuses a non-number
    with pytest.raises(UserError, match="redshift: 'abc' is not a number or a list of numbers"):
        sampler.generate(labels, redshift="abc")  # and so does the model, called directly
    with pytest.raises(UserError, match="redshift: this sampler's prior was trained without a condition"):
        mlflow.pyfunc.load_model(uris["plain"]).predict(labels, params={"redshift": [0.1]})
