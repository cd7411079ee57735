"""Judge stage, sampler evaluation and their commands, against a real MLflow store (tiny models, 32 px)."""

from __future__ import annotations

import json

import h5py
import mlflow
import numpy as np
import pytest
import torch
import typer
from scipy.stats import rankdata
from typer.testing import CliRunner

import tasks.judge
from model import metrics as J
from model.data import load_prepared, prepare
from model.evaluation import headline_names
from model.galaxy10 import CLASS_NAMES
from model.metrics import balanced_frechet, per_class_frechet
from model.sampling import DEFAULT_TOP_P
from model.synth_labels import drawn_classes, source_label, synth_labels
from model.training import native_bf16
from tasks import faults
from tasks.evaluate import evaluate_run, redshift_names
from tasks.judge import DRAWN_METRICS, score_real, slug, train_judge_run
from tasks.prior import train_prior_run
from tasks.vqvae import train_vqvae_run
from tests.conftest import TINY_PRIOR, TINY_VQVAE, cli_settings, console, make_galaxy10
from tests.test_registry import champion, register

TINY_JUDGE = dict(widths=(4, 8), epochs=2, batch_size=16, eval_batch_size=64, device="cpu")


def artifact_names(run_id: str, folder: str) -> set[str]:
    return {a.path for a in mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path=folder)}


def load_npy(run_id: str, path: str) -> np.ndarray:
    return np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def cli() -> typer.Typer:
    """The `galaxy` app, in-process."""
    from cli.main import app

    return app


def test_balanced_frechet_hand_computed():
    # 1-D features: class 0 at {-1, 1}, class 1 at {9, 11}: mean 5, unbiased variance (36+16+16+36)/3.
    f = np.array([[-1.0], [1.0], [9.0], [11.0]])
    y = np.array([0, 0, 1, 1])
    assert balanced_frechet(f, y, f, y) == pytest.approx(0.0, abs=1e-9)
    # class 1 four times over: each class still weighs 1/2, so the mean stays 5; the reliability-weighted
    # variance is (1/2 (36+16) + 1/8 (4*16 + 4*36)) / (v1 - v2/v1), v1 = 2, v2 = 2/4 + 8/64
    f_skewed, y_skewed = np.concatenate([f, np.tile(f[2:], (3, 1))]), np.concatenate([y, [1] * 6])
    var1, var2 = 104 / 3, 52 / (2 - 0.625 / 2)
    assert balanced_frechet(f, y, f_skewed, y_skewed) == pytest.approx((np.sqrt(var1) - np.sqrt(var2)) ** 2, rel=1e-9)
    assert J.frechet_from_features(f, f_skewed) > 4.0  # unweighted, the class mix alone moves the mean by 2
    # shifted by 2 with the same spread: FD = 2^2 (the covariance term vanishes)
    assert balanced_frechet(f, y, f + 2.0, y) == pytest.approx(4.0, rel=1e-9)
    # only the classes both sets hold count
    assert balanced_frechet(f, y, f[:2], y[:2]) == pytest.approx(0.0, abs=1e-9)


def test_per_class_frechet_skips_classes_with_fewer_than_two_images():
    rng = np.random.default_rng(0)
    f1, y1 = rng.normal(size=(7, 3)), np.array([0, 0, 0, 1, 1, 2, 2])
    f2, y2 = f1.copy(), np.array([0, 0, 0, 1, 1, 2, 3])
    notes: list[str] = []
    out = per_class_frechet(f1, y1, f2, y2, CLASS_NAMES[:4], "a vs b", notes)
    assert out[:2] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert np.isnan(out[2]) and np.isnan(out[3])
    assert len(notes) == 1 and notes[0].startswith("a vs b: per-class FD skipped")
    assert "class 2 round smooth (2 vs 1 images); class 3 in-between round smooth (0 vs 1 images)" in notes[0]


def test_a_synthetic_test_split_scores_the_judge_against_the_drawn_classes_too(mlflow_store, tmp_path, monkeypatch):
    notes: list[str] = []  # the confusion figure's second title line, as the stage asks for it
    draw = tasks.judge.confusion_figure
    monkeypatch.setattr(
        tasks.judge, "confusion_figure", lambda c, n, t, note: notes.append(note) or draw(c, n, t, note)
    )
    labels = synth_labels(300, 0)  # the synthetic file of 300 images, seed 0: its drawn classes are known
    src = make_galaxy10(tmp_path / "synthetic.h5", n=300, side=32, ans=labels)
    data = prepare(src, tmp_path / "prepared", size=32, source_label=source_label(300, 0)).out
    ref = train_judge_run(data, "demo", overrides=TINY_JUDGE)
    m = mlflow.get_run(ref.run_id).data.metrics
    y_true, y_pred = load_npy(ref.run_id, "judge/test_labels_and_predictions.npy")
    drawn = drawn_classes(labels, 0)[load_prepared(data).indices("test")]
    assert (drawn != y_true).sum() == 3  # of the 31 test labels, 3 are wrong by design
    ceiling = J.balanced_hit_rate(drawn == y_true, y_true)
    assert m["test_balanced_accuracy_label_ceiling"] == pytest.approx(ceiling) and ceiling < 1
    assert m["test_balanced_accuracy_vs_drawn"] == pytest.approx(J.balanced_hit_rate(y_pred == drawn, drawn))
    assert ref.metrics["test_balanced_accuracy_label_ceiling"] == pytest.approx(ceiling)  # in the summary too
    assert notes == [
        f"a judge that read every image right would reach a balanced accuracy of {ceiling:.1%} against these labels"
    ]


def test_train_judge_run_logs_and_registers(mlflow_store, tiny_data):
    ref = train_judge_run(tiny_data, "demo", overrides=TINY_JUDGE)
    run = mlflow.get_run(ref.run_id)
    m = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["synthetic"] == "false" and run.data.tags["stage"] == "judge"
    assert run.data.params["model.image_size"] == "32" and run.data.params["model.epochs"] == "2"
    native = native_bf16(torch.device("cpu"))  # the precision the training step ran in on this machine
    assert run.data.params["train_precision"] == ("bf16" if native else "float32")
    assert not set(DRAWN_METRICS) & set(m)  # a real-format file: what its images show is not known
    assert [h.step for h in mlflow.MlflowClient().get_metric_history(ref.run_id, "val_acc")] == [1, 2]
    assert {"judge/confusion.png", "judge/precision_recall.png"} <= artifact_names(ref.run_id, "judge")
    # test metrics agree with the logged labels and predictions
    y_true, y_pred = load_npy(ref.run_id, "judge/test_labels_and_predictions.npy")
    report = J.classification_report(y_true, y_pred, len(CLASS_NAMES))
    assert m["test_accuracy"] == pytest.approx(report["accuracy"]) == pytest.approx(ref.metrics["test_accuracy"])
    assert m["test_precision_5_barred_spiral"] == pytest.approx(report["precision"][5])
    assert m["test_recall_3_in_between_round_smooth"] == pytest.approx(report["recall"][3])
    assert ref.model_uri == "models:/galaxy-judge/1"
    # the registered pyfunc: probabilities by default, features on request
    model = mlflow.pyfunc.load_model("models:/galaxy-judge@champion")
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probs = model.predict(images)
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert model.predict(images, params={"output": "features"}).shape == (5, 8)
    with pytest.raises(Exception, match="probs"):
        model.predict(images, params={"output": "logits"})


def test_evaluate_run_and_commands(mlflow_store, tiny_data):
    runner = CliRunner()
    vq = train_vqvae_run(tiny_data, "demo", epochs=1, overrides=TINY_VQVAE)
    pr = train_prior_run(vq.model_uri, tiny_data, "demo", epochs=1, overrides={**TINY_PRIOR, "condition": "redshift"})
    judged = runner.invoke(
        cli(),
        [
            "train",
            "judge",
            "--data",
            str(tiny_data),
            "--set",
            "widths=[4,8]",
            "--set",
            "batch_size=16",
            "--set",
            "device=cpu",
            "--epochs",
            "2",
        ],
    )
    assert judged.exit_code == 0, judged.output
    assert "test balanced accuracy" in judged.stdout and "models:/galaxy-judge/1" in judged.stdout

    result = evaluate_run(pr.model_uri, tiny_data, per_class=3, seed=1, replicates=20)
    run = mlflow.get_run(result["run_id"])
    m = run.data.metrics
    assert (
        run.data.tags["sampler_uri"] == pr.model_uri and run.data.tags["judge_uri"] == "models:/galaxy-judge@champion"
    )
    assert run.data.params["top_p"] == str(DEFAULT_TOP_P) and result["summary"].startswith("samples at top-p 0.9:")
    headline = headline_names([1.0, 3.0, 9.0], 3.0) + redshift_names(3.0)  # the prior is conditioned on redshift
    assert "cond_balanced_acc_cfg3" in headline and "fd_ceiling_recon_vs_test" in headline
    assert set(result["metrics"]) == {f"{n}{end}" for n in headline for end in ("", "_lo", "_hi")}
    for key in (*result["metrics"], "cond_balanced_acc_cfg3_class4"):
        assert key in m and np.isfinite(m[key]), key
    for name in headline:
        assert m[f"{name}_lo"] - 1e-9 <= m[name] <= m[f"{name}_hi"] + 1e-9, name
    # the sampler's run carries the headline, where the champion rule across tokenizers reads it
    assert mlflow.get_run(pr.run_id).data.metrics["eval_cond_balanced_acc_cfg3"] == m["cond_balanced_acc_cfg3"]
    assert result["promoted"] is False  # the sampler is the champion already
    assert {
        f"evaluate/{n}"
        for n in (
            "class_accuracy_vs_cfg.png",
            "confusion_cfg3.png",
            "confusion_recon.png",
            "frechet.png",
            "summary.png",
            "summary.json",
            "fd_space.npz",
            "predictions_cfg1.npy",
            "predictions_cfg3.npy",
            "predictions_cfg9.npy",
            "redshift_recovery.png",
            "redshift_readback.npz",
        )
    } <= artifact_names(run.info.run_id, "evaluate")
    # redshift: rho recomputed from the logged read-back (Pearson of average ranks); samples asked for their class's own
    # training redshifts, the floor the same asked values; the ceiling the test split's catalogue redshifts
    z = np.load(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluate/redshift_readback.npz")
    )
    data = load_prepared(tiny_data)
    train = data.indices("train")
    for name in redshift_names(3.0):
        asked, read = z[f"{name}_asked"], z[f"{name}_read"]
        keep = np.isfinite(asked)
        ranks = [rankdata(v[keep]) for v in (asked, read)]  # ties (asked values repeat) share their mean rank
        assert m[name] == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-6), name
    np.testing.assert_array_equal(z["z_rho_cfg3_asked"], z["z_rho_floor_no_z_asked"])
    for c, value in zip(z["z_rho_cfg3_labels"], z["z_rho_cfg3_asked"], strict=True):
        assert value in data.redshift[train][data.labels[train] == c]
    np.testing.assert_array_equal(z["z_rho_real_test_asked"], data.redshift[data.indices("test")])
    assert "redshift asked vs read back" in result["summary"]
    # balanced accuracies recomputed by hand from the logged predictions
    requested = load_npy(run.info.run_id, "evaluate/requested_labels.npy")
    assert np.bincount(requested).tolist() == [3] * 10
    for cfg in (1, 3, 9):
        predicted = load_npy(run.info.run_id, f"evaluate/predictions_cfg{cfg}.npy")
        recall = [np.mean(predicted[requested == c] == c) for c in range(10)]
        assert m[f"cond_balanced_acc_cfg{cfg}"] == pytest.approx(np.mean(recall))
        assert m[f"cond_balanced_acc_cfg{cfg}_class7"] == pytest.approx(recall[7])
    # the ceiling reconstructs training images, never the test images it is compared with; the floor others again
    rows = {n: set(load_npy(run.info.run_id, f"evaluate/{n}_rows.npy").tolist()) for n in ("test", "floor", "ceiling")}
    assert rows["ceiling"] and not rows["ceiling"] & rows["test"] and not rows["ceiling"] & rows["floor"]
    # the FDs recomputed from the reduced features they were measured on, each set as many images per class
    space = np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluate/fd_space.npz"))
    counts = {n: np.bincount(space[f"{n}_y"], minlength=10).tolist() for n in headline[5:8]}
    assert counts["fd_generated_cfg3"] == counts["fd_floor_real_vs_test"] == counts["fd_ceiling_recon_vs_test"]
    for name in headline[5:8]:
        fd = balanced_frechet(space[f"{name}_z"], space[f"{name}_y"], space["test_z"], space["test_y"])
        assert m[name] == pytest.approx(fd, rel=1e-6), name
    assert space["test_z"].shape[1] == m["fd_dims"] >= 1
    # the tiny test split has classes with one image: their per-class FDs are skipped and the note says so
    test_y = space["test_y"]
    summary = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/evaluate/summary.json"))
    skipped = [c for c in range(10) if (test_y == c).sum() < 2 and counts["fd_generated_cfg3"][c] > 0]
    assert skipped and all(f"fd_generated_cfg3_class{c}" not in m for c in skipped)
    c = skipped[0]
    n_c = counts["fd_generated_cfg3"][c]
    expected = f"class {c} {CLASS_NAMES[c]} ({n_c} vs {(test_y == c).sum()} images)"
    assert any(expected in note for note in summary["notes"])
    assert summary["metrics"][f"fd_generated_cfg3_class{c}"] is None
    assert "evaluate/notes.txt" in artifact_names(run.info.run_id, "evaluate")

    ok = runner.invoke(
        cli(),
        ["evaluate", "--model", pr.model_uri, "--data", str(tiny_data), "--per-class", "2", "--cfg", "1,3"]
        + ["--top-p", "1"],
    )
    assert ok.exit_code == 0, ok.output
    latest = mlflow.search_runs(experiment_names=["galaxy-evaluate"], order_by=["start_time DESC"]).iloc[0]
    assert latest["params.top_p"] == "1.0" and "samples at top-p 1:" in ok.stdout
    assert "class-conditional balanced accuracy: cfg 1" in ok.stdout and "floor real" in ok.stdout
    assert "ceiling recon" in ok.stdout and "generated / ceiling" in ok.stdout
    cases = [
        (["--per-class", "1"], "--per-class: 1 is too few"),
        (["--data", "nowhere"], "nowhere: no such prepared dataset folder"),
        (["--model", "models:/galaxy-sampler/99"], "models:/galaxy-sampler/99: no such model"),
        (["--judge", "models:/galaxy-judge@nothing"], "models:/galaxy-judge@nothing: no such model"),
        (["--judge", pr.model_uri], "is not a galaxy-judge model"),
        (["--cfg", "3,x"], "--cfg: '3,x' is not a comma-separated list"),
        (["--top-p", "0"], "--top-p: 0.0 is outside (0, 1]"),
    ]
    for extra, needle in cases:
        proc = runner.invoke(
            cli(), ["evaluate", "--model", pr.model_uri, "--data", str(tiny_data), "--per-class", "2", *extra]
        )
        assert proc.exit_code == 2, (extra, proc.output)
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and needle in proc.stderr, (extra, proc.stderr)
    assert mlflow.search_runs(experiment_names=["galaxy-evaluate"]).shape[0] == 2  # bad input made no run


def test_stage_keeps_a_judge_champion_with_higher_accuracy(mlflow_store, tiny_data):
    # no real judge is right more than always; chosen on validation data of the same prepared folder
    best = register("galaxy-judge", "best_val_balanced_acc", 2.0, {"data_key": load_prepared(tiny_data).key})
    mlflow.MlflowClient().set_registered_model_alias("galaxy-judge", "champion", best)
    ref = train_judge_run(tiny_data, "demo", overrides=TINY_JUDGE)
    assert ref.version != best and ref.metrics["test_accuracy"] <= 1.0
    assert champion("galaxy-judge") == best


def test_judge_killed_after_an_epoch_leaves_its_run_open(mlflow_store, tiny_data):
    settings = cli_settings({k: v for k, v in TINY_JUDGE.items() if k != "epochs"})
    killed = console("train", "judge", "--data", str(tiny_data), "--epochs", "3", *settings, env={faults.ENV: "1"})
    assert killed.returncode == faults.EXIT_CODE, killed.stderr
    (run,) = mlflow.search_runs(experiment_names=["galaxy-judge"], output_format="list")
    assert run.info.status == "RUNNING"  # never ended, as after a kill
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_acc")] == [1]
    assert mlflow.MlflowClient().search_model_versions("name='galaxy-judge'") == []


def test_evaluate_console_script_user_error(tmp_path):
    proc = console("evaluate", "--data", "nowhere", "--per-class", "1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    expected = "error: --per-class: 1 is too few: a Fréchet distance needs at least 2 images per class"
    assert proc.stderr.strip().splitlines() == [expected]


def test_score_real_of_a_judge_that_always_says_one_class(mlflow_store, tmp_path):
    from model.judge import JudgeConfig, MorphologyCNN

    model = MorphologyCNN(JudgeConfig(image_size=16, widths=(4,), device="cpu")).eval()
    with torch.no_grad():  # logits = bias: always class 2
        model.head.weight.zero_()
        model.head.bias.copy_(torch.eye(10)[2] * 10)
    labels = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3, 4])  # classes 0-4 only, 3/1/4/1/1 images
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    with mlflow.start_run() as run:
        metrics = score_real(model, tmp_path / "dev.h5", images, labels)
    # recall 0, 0, 1, 0, 0 over the 5 classes present; 4 of 10 images right
    expected = {"judge_real_balanced_accuracy": 1 / 5, "judge_real_accuracy": 4 / 10}
    expected |= {"judge_real_balanced_accuracy_lo": 1 / 5, "judge_real_balanced_accuracy_hi": 1 / 5}  # every resample
    expected |= {f"judge_real_recall_{c}_{slug(CLASS_NAMES[c])}": float(c == 2) for c in range(5)}
    assert metrics == pytest.approx(expected) and mlflow.get_run(run.info.run_id).data.metrics == pytest.approx(
        expected
    )
    confusion = load_npy(run.info.run_id, "judge/real_confusion.npy")
    assert confusion[:, 2].tolist() == [3, 1, 4, 1, 1, 0, 0, 0, 0, 0] and confusion.sum() == 10
    assert "judge/real_confusion.png" in artifact_names(run.info.run_id, "judge")


def test_train_judge_with_real_scores_it_and_prints_the_recall(mlflow_store, tiny_data, tmp_path):
    # one 64 px image (the judge is 32 px) 55 times, labelled 0 once, 1 twice, ..., 9 ten times: whatever class
    # the judge sees in it, it has recall 1 there and 0 elsewhere (balanced accuracy 0.1)
    with h5py.File(make_galaxy10(tmp_path / "one.h5", n=1, side=64, seed=7), "r") as f:
        one = f["images"][:]  # (1, 64, 64, 3)
    labels = np.repeat(np.arange(10), np.arange(1, 11)).astype(np.uint8)  # (55,)
    real = make_galaxy10(tmp_path / "real.h5", n=55, side=64, images=np.repeat(one, 55, axis=0), ans=labels)
    settings = cli_settings({k: v for k, v in TINY_JUDGE.items() if k != "epochs"})
    args = ["train", "judge", "--data", str(tiny_data), "--epochs", "2", *settings, "--real", str(real)]
    proc = CliRunner().invoke(cli(), args)
    assert proc.exit_code == 0, proc.output
    (run,) = mlflow.search_runs(experiment_names=["galaxy-judge"], output_format="list")
    m = run.data.metrics
    # the images were resized as `prepare` resizes them: the registered judge on a prepared copy agrees
    prepared = load_prepared(prepare(real, tmp_path / "real-prepared", size=32).out)
    probs = mlflow.pyfunc.load_model("models:/galaxy-judge/1").predict(np.asarray(prepared.images))
    np.testing.assert_allclose(load_npy(run.info.run_id, "judge/real_probabilities.npy"), probs, rtol=1e-5)
    k = int(probs[0].argmax())
    accuracy = (k + 1) / 55
    assert m["judge_real_balanced_accuracy"] == pytest.approx(0.1) and m["judge_real_accuracy"] == pytest.approx(
        accuracy
    )
    assert run.data.params["data.real"] == str(real) and run.data.params["data.n_real"] == "55"
    # the command ends with the balanced accuracy and the recall of each class
    tail = proc.stdout.strip().splitlines()[-11:]
    # every image is one image: the judge calls them all class k, so every resample scores 0.1 too
    expected = f"real real.h5: balanced accuracy 0.100 [0.100, 0.100] (accuracy {accuracy:.3f}); recall per class:"
    assert tail[0] == expected
    assert tail[1 + k] == f"  {k} {CLASS_NAMES[k]:<26} 1.000"
    assert [line.split()[-1] for line in tail[1:]] == ["1.000" if c == k else "0.000" for c in range(10)]


def test_judge_refuses_a_bad_real_file_before_training(mlflow_store, tiny_data, tmp_path):
    (tmp_path / "text.h5").write_text("not hdf5")
    cases = [
        (tmp_path / "nowhere.h5", "no such file"),
        (make_galaxy10(tmp_path / "unlabelled.h5", ans=None), "has no labels ('ans')"),
        (make_galaxy10(tmp_path / "flat.h5", images=np.zeros((40, 64, 32, 3), np.uint8)), "'images' has shape"),
        (make_galaxy10(tmp_path / "small.h5", side=16), "images are 16 px, smaller than the 32 px"),
        (tmp_path / "text.h5", "not a readable HDF5 file"),
        (tmp_path, "is a folder"),
    ]
    settings = cli_settings(TINY_JUDGE)
    for path, needle in cases:
        proc = CliRunner().invoke(cli(), ["train", "judge", "--data", str(tiny_data), *settings, "--real", str(path)])
        assert proc.exit_code == 2, (path, proc.output)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], (path, proc.stderr)
    assert not (mlflow_store / "runs").exists()  # nothing trained: no run folder, no MLflow run
    assert mlflow.search_runs(experiment_names=["galaxy-judge"]).shape[0] == 0
