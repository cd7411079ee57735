"""The Optuna sweep on Optuna's own API: search space, one-time study creation, queued trials taken once on
SQLite, trials as child runs with pruning, failing workers and foreign data as one-line errors, and `galaxy sweep`
end to end (parallel workers, the A6 report, the best trial registered). Three workers on PostgreSQL and a
tracking server, and a SIGKILLed worker's trial failed by the heartbeat and retried: tests/test_scale.py."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from cli.main import app
from model.config import from_preset
from model.data import load_prepared, prepare
from model.errors import UserError
from model.plotting.sweep import best_per_value
from model.vqvae import PRESETS, lucidrains_defaults
from tasks.sweep import run_sweep
from tasks.sweep_space import SweepConfig, SweepSpace
from tasks.sweep_study import STORAGE_ENV, create_study, first_beat, open_rdb
from tasks.sweep_trial import EXIT_ENV, EXPERIMENT, make_objective
from tests.conftest import TINY_VQVAE, make_galaxy10, make_store, use_store

GALAXY = str(Path(sys.executable).with_name("galaxy"))
FIXED = {k: v for k, v in TINY_VQVAE.items() if k not in ("codebook_size", "embedding_dim")}
TINY_SPACE = SweepSpace(codebook_sizes=(16, 32), embedding_dims=(4, 8), cosine_sim=(False,))
FAST_BEAT = {"heartbeat_interval": 1, "grace_period": 3, "max_retry": 2}  # a dead worker's trial is stale after 3 s


def sweep_runs(study_name: str) -> list:
    return mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.sweep_study = '{study_name}'", output_format="list"
    )


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(needle in lines[0] for needle in needles), lines[0]


def test_space_is_derived_from_the_preset_and_suggests_valid_overrides():
    assert SweepSpace.from_preset("demo") == SweepSpace()  # K/4..2K around 256, D/4..2D around 32
    article = SweepSpace.from_preset("article")
    assert article.codebook_sizes == (256, 512, 1024, 2048) and article.embedding_dims == (64, 128, 256, 512)
    assert SweepSpace.from_dict(json.loads(json.dumps(TINY_SPACE.to_dict()))) == TINY_SPACE
    config = SweepConfig(epochs=2, overrides=FIXED, space=TINY_SPACE, data_key="abc", n_trials=5)
    assert SweepConfig.from_dict(json.loads(json.dumps(config.to_dict()))).n_trials == 5

    chosen = {
        "codebook_size": 64,
        "embedding_dim": 8,
        "quantizer": "lucidrains",
        "anti_collapse": False,
        "cosine_sim": True,
    }
    params = SweepSpace().suggest(optuna.trial.FixedTrial(chosen))
    assert params == {
        "codebook_size": 64,
        "embedding_dim": 8,
        "quantizer": "lucidrains",
        "kmeans_init": False,
        "threshold_ema_dead_code": 0,
        "use_cosine_sim": True,
    }
    model_cfg = from_preset(PRESETS, "demo", **params)
    assert (model_cfg.codebook_size, model_cfg.embedding_dim) == (64, 8)
    assert (model_cfg.kmeans_init, model_cfg.use_cosine_sim) == (False, True)

    simple_trial = optuna.trial.FixedTrial({"codebook_size": 128, "embedding_dim": 16, "quantizer": "simple"})
    simple = SweepSpace(quantizers=("simple",)).suggest(simple_trial)
    # the preset's lucidrains-only options (the demo's k-means init) are reset to their defaults
    assert simple == {"codebook_size": 128, "embedding_dim": 16, "quantizer": "simple", **lucidrains_defaults()}
    assert from_preset(PRESETS, "demo", **simple).quantizer == "simple"


def test_a6_comparison_takes_the_widest_group_and_its_best_row_per_value():
    def row(trial, k, d, mse, state="COMPLETE"):
        return {"trial": trial, "state": state, "codebook_size": k, "embedding_dim": d, "val_mse": mse}

    rows = [
        row(0, 16, 4, 0.30),
        row(1, 16, 8, 0.20),
        row(2, 16, 8, 0.10),
        row(3, 32, 4, 0.05),
        row(4, 32, 8, 0.01, "PRUNED"),
        row(5, 64, 4, 0.50),
        row(6, 64, 8, 0.40),
        row(7, 64, 2, 0.60),
    ]
    # across D: K = 64 has three values of D (2, 4, 8), K = 16 two, K = 32 one (its pruned row does not count)
    assert best_per_value(rows, vary="embedding_dim", fixed="codebook_size") == (64, [rows[7], rows[5], rows[6]])
    # across K: D = 4 has three values of K (16, 32, 64), D = 8 two (its K = 32 row was pruned)
    assert best_per_value(rows, vary="codebook_size", fixed="embedding_dim") == (4, [rows[0], rows[3], rows[5]])
    # a tie in size goes to the group with the lower best MSE; within a value the lowest MSE is shown
    tie = [row(0, 16, 4, 0.3), row(1, 16, 8, 0.2), row(2, 32, 4, 0.1), row(3, 32, 8, 0.4), row(4, 32, 8, 0.35)]
    assert best_per_value(tie, vary="embedding_dim", fixed="codebook_size") == (32, [tie[2], tie[4]])
    assert best_per_value([row(0, 16, 4, 0.3, "PRUNED")], vary="embedding_dim", fixed="codebook_size") == (None, [])


def test_create_study_once_keeps_its_settings_and_a_bad_url_is_a_user_error(tmp_path):
    url = f"sqlite:///{tmp_path}/db/optuna.db"  # the folder is created
    assert create_study(url, "s", {"n_trials": 1}, seed=3).study_name == "s"
    create_study(url, "s", {"n_trials": 2}, seed=99, heartbeat_interval=7)  # loads it: settings kept, config replaced
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]
    study = optuna.load_study(study_name="s", storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    settings = study.user_attrs["sweep_settings"]
    assert settings["seed"] == 3 and settings["heartbeat_interval"] == 60
    assert study.user_attrs["sweep_config"] == {"n_trials": 2}
    with pytest.raises(UserError, match="in-memory"):
        create_study("sqlite:///:memory:", "s")
    with pytest.raises(UserError, match="not a database URL"):
        create_study("not a url", "s")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() outside optimize(), on purpose
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # fail_stale_trials
def test_a_trial_whose_worker_dies_before_the_heartbeat_thread_beats_is_still_failed_as_stale(tmp_path):
    storage = open_rdb(f"sqlite:///{tmp_path}/optuna.db", {"heartbeat_interval": 1, "grace_period": 1, "max_retry": 0})
    study = optuna.create_study(study_name="s", storage=storage)
    beaten, silent = study.ask(), study.ask()  # RUNNING, as a worker's trial is the moment ask() returns
    first_beat(storage, "s", beaten.number)  # what the objective does first; then this "worker" dies
    time.sleep(2.5)  # past the grace period (SQLite keeps heartbeat times to the second)
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[beaten.number] == TrialState.FAIL  # the heartbeat noticed it
    assert states[silent.number] == TrialState.RUNNING  # Optuna never fails a trial that did not beat once


TAKER = """
import json, pathlib, sys, time
import optuna
from optuna.study import MaxTrialsCallback
from tasks.sweep_study import open_rdb
url, folder, n_procs, n_queued, studies = sys.argv[1], pathlib.Path(sys.argv[2]), 2, int(sys.argv[3]), sys.argv[5:]
rdb = open_rdb(url)
got = {}
for name in studies:  # the race is a matter of chance: run it on several studies
    study = optuna.load_study(study_name=name, storage=rdb)
    (folder / f"ready-{name}-{sys.argv[4]}").touch()
    while len(list(folder.glob(f"ready-{name}-*"))) < n_procs:  # start together
        time.sleep(0.01)
    got[name] = []
    def objective(trial):
        got[name].append(trial.number)
        return float(trial.suggest_categorical("k", [16]))
    study.optimize(objective, callbacks=[MaxTrialsCallback(n_queued, states=(optuna.trial.TrialState.COMPLETE,))])
print(json.dumps(got))
"""


def test_sqlite_workers_take_each_queued_trial_once(tmp_path):
    # Retried trials wait in the queue. Measured: without BEGIN IMMEDIATE two such processes took one queued trial
    # twice on SQLite (which ignores SELECT ... FOR UPDATE) in 3 of 4 studies, and one crashed with
    # UpdateFinishedTrialError.
    url, n, names = f"sqlite:///{tmp_path}/optuna.db", 40, ["s0", "s1", "s2"]
    for name in names:
        study = create_study(url, name)
        for _ in range(n):
            study.enqueue_trial({}, skip_if_exists=False)
    cmd = [sys.executable, "-c", TAKER, url, str(tmp_path), str(n)]
    procs = [
        subprocess.Popen([*cmd, str(i), *names], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):  # one crashed: the other would wait for it forever
            break
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.kill()
    outputs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    taken = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert all(sum(got.values(), []) for got in taken), taken  # both processes took some
    for name in names:
        numbers = sorted(taken[0][name] + taken[1][name])
        assert numbers[:n] == list(range(n)) and len(numbers) <= n + 1  # each queued trial once; overshoot <= 1
        trials = optuna.load_study(study_name=name, storage=url).trials
        assert Counter(t.state for t in trials) == {TrialState.COMPLETE: len(numbers)}


def test_pruned_trial_ends_its_run_killed_and_bad_settings_fail(mlflow_store, tiny_data):
    with mlflow.start_run() as parent:
        pass
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes any positive MSE
    space = SweepSpace(codebook_sizes=(16,), embedding_dims=(4,), anti_collapse=(False,), cosine_sim=(False,))
    config = SweepConfig(epochs=2, overrides=FIXED, space=space, parent_run_id=parent.info.run_id)
    study.optimize(make_objective(study, config, tiny_data), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_done"] == 1  # stopped after epoch 1 of 2
    assert trial.user_attrs["val_psnr"] > 0 and "val_perplexity" in trial.user_attrs
    run = mlflow.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.tags["optuna_state"] == "PRUNED"
    assert run.info.run_name.startswith("trial-000-")
    assert not list((mlflow_store / "runs").glob("sweep-*/trial-*"))  # its checkpoint folder is cleaned up

    broken = SweepConfig(epochs=1, overrides={**FIXED, "no_such_setting": 1}, space=space)
    study.optimize(make_objective(study, broken, tiny_data), n_trials=1, catch=(Exception,))
    assert study.trials[1].state == TrialState.FAIL and "no_such_setting" in study.trials[1].user_attrs["error"]


def test_worker_exiting_nonzero_fails_the_sweep_in_one_line_with_its_log_tail(mlflow_store, tiny_data, monkeypatch):
    monkeypatch.setenv(EXIT_ENV, "0")
    with pytest.raises(UserError) as caught:
        run_sweep(tiny_data, n_trials=2, workers=1, epochs=2, study_name="dies", space=TINY_SPACE, overrides=FIXED)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("sweep worker 0: exited 3;"), message
    assert "exiting inside trial 0" in message and "--study dies" in message
    # the parent failed the dead worker's trial and ended its MLflow run; the parent run itself FAILED
    trials = optuna.load_study(study_name="dies", storage="sqlite:///mlflow/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    (run,) = sweep_runs("dies")
    assert run.info.status == "FAILED" and run.data.tags["optuna_state"] == "FAIL"
    assert mlflow.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "FAILED"


def test_worker_on_other_data_than_the_study_is_a_one_line_error(mlflow_store, tiny_data, monkeypatch):
    url = f"sqlite:///{mlflow_store}/optuna.db"
    create_study(url, "s", SweepConfig(data_key=load_prepared(tiny_data).key).to_dict())
    other = prepare(make_galaxy10(mlflow_store / "other.h5", n=40, seed=1), mlflow_store / "other", size=32).out
    monkeypatch.setenv(STORAGE_ENV, url)
    result = CliRunner().invoke(app, ["sweep-worker", "--study", "s", "--data", str(other)])
    one_line_error(result, str(other), load_prepared(other).key[:12], load_prepared(tiny_data).key[:12])
    assert "sweeps data" in result.stderr


def test_galaxy_sweep_argument_errors_are_one_line(mlflow_store, tiny_data):
    runner = CliRunner()
    for args, needle in (
        (["--trials", "0"], "--trials: 0 is below 1"),
        (["--workers", "0"], "--workers: 0 is below 1"),
        (["--storage", "not a url"], "--storage: 'not a url' is not a database URL"),
    ):
        one_line_error(runner.invoke(app, ["sweep", "--data", str(tiny_data), *args]), needle)
    assert not (mlflow_store / "mlflow" / "optuna.db").exists(), "an argument error must not create a study"
    assert mlflow.MlflowClient().get_experiment_by_name(EXPERIMENT) is None, "nor start a sweep run"


def test_galaxy_sweep_command_end_to_end(tmp_path, tiny_data, monkeypatch, empty_mlflow_db):
    make_store(tmp_path, empty_mlflow_db)  # the default store, mlflow/mlflow.db, already made (its migrations: 5-10 s)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GALAXY_", "MLFLOW_TRACKING"))}
    env["GALAXY_PROGRESS"] = "0"
    settings = [f"--set={k}={json.dumps(v)}" for k, v in {**FIXED, "codebook_size": 16, "embedding_dim": 4}.items()]
    args = ["sweep", "--data", str(tiny_data), "--trials", "2", "--workers", "1", "--epochs", "1", "--study", "cli"]
    proc = subprocess.run(
        [GALAXY, *args, *settings], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "study cli: best val MSE" in proc.stdout and "best model models:/galaxy-vqvae/1" in proc.stdout
    study = optuna.load_study(study_name="cli", storage=f"sqlite:///{tmp_path}/mlflow/optuna.db")
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 2, states  # one worker: exactly N
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}

    # the parent run: one nested run per trial, the A6 figures and results table; the best trial registered
    # (tests/test_scale.py checks the same of 3 workers on PostgreSQL and a tracking server)
    use_store(f"sqlite:///{tmp_path}/mlflow/mlflow.db", monkeypatch)
    parent_id = re.search(r"parent run (\w+);", proc.stdout).group(1)
    assert mlflow.get_run(parent_id).info.status == "FINISHED"
    children = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list"
    )
    assert sorted(int(r.data.tags["sweep_trial"]) for r in children) == sorted(t.number for t in study.trials)
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=parent_id, artifact_path="sweep")}
    assert {
        "sweep/results.csv",
        "sweep/metrics_table.png",
        "sweep/mse_by_size.png",
        "sweep/reconstructions_by_dim.png",
        "sweep/reconstructions_by_size.png",
        "sweep/logs",
    } <= names
    rows = list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"runs:/{parent_id}/sweep/results.csv"))))
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in study.trials)
    assert {"val_psnr", "val_utilisation", "val_perplexity"} <= set(rows[0])
    best = study.best_trial
    version = mlflow.MlflowClient().get_model_version_by_alias("galaxy-vqvae", "champion")
    assert str(version.version) == "1" and version.run_id == best.user_attrs["mlflow_run_id"]
