"""The Optuna sweep: search space, one-time study creation, atomic trial claims across processes, pruning,
and a whole sweep on two worker processes that loses no trial."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from model.errors import UserError
from model.vqvae import preset
from tasks.sweep import (
    SweepConfig,
    SweepSpace,
    create_study,
    enqueue_trials,
    open_storage,
    run_sweep,
    run_trial,
)
from tasks.vqvae import load_vqvae_from_uri
from tests.conftest import TINY_VQVAE

FIXED = {k: v for k, v in TINY_VQVAE.items() if k not in ("codebook_size", "embedding_dim")}
TINY_SPACE = SweepSpace(codebook_sizes=(16, 32), embedding_dims=(4, 8), cosine_sim=(False,))


def test_space_is_derived_from_the_preset_and_suggests_valid_overrides():
    assert SweepSpace.from_preset("demo") == SweepSpace()  # K/4..2K around 256, D/4..2D around 32
    article = SweepSpace.from_preset("article")
    assert article.codebook_sizes == (256, 512, 1024, 2048) and article.embedding_dims == (64, 128, 256, 512)
    assert SweepSpace.from_dict(json.loads(json.dumps(TINY_SPACE.to_dict()))) == TINY_SPACE

    fixed = optuna.trial.FixedTrial({"codebook_size": 64, "embedding_dim": 8, "quantizer": "lucidrains", "anti_collapse": False, "cosine_sim": True})
    params = SweepSpace().suggest(fixed)
    assert params == {"codebook_size": 64, "embedding_dim": 8, "quantizer": "lucidrains", "kmeans_init": False, "threshold_ema_dead_code": 0, "use_cosine_sim": True}
    model_cfg, _ = preset("demo", **params)
    assert (model_cfg.codebook_size, model_cfg.embedding_dim, model_cfg.kmeans_init, model_cfg.use_cosine_sim) == (64, 8, False, True)

    simple = SweepSpace(quantizers=("simple",)).suggest(optuna.trial.FixedTrial({"codebook_size": 128, "embedding_dim": 16, "quantizer": "simple"}))
    assert simple == {"codebook_size": 128, "embedding_dim": 16, "quantizer": "simple"}  # no lucidrains-only options
    assert preset("demo", **simple)[0].quantizer == "simple"


def test_create_study_once_is_idempotent_and_bad_storage_is_a_user_error(tmp_path):
    url = f"sqlite:///{tmp_path}/db/optuna.db"  # the folder is created
    assert create_study(url, "s", seed=3) == "s"
    assert create_study(url, "s", seed=99) == "s"  # loads the existing study, keeps its settings
    summaries = optuna.get_all_study_summaries(url)
    assert [s.study_name for s in summaries] == ["s"]
    study = optuna.load_study(study_name="s", storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["sweep_settings"]["seed"] == 3
    with pytest.raises(UserError, match="in-memory"):
        create_study("sqlite:///:memory:", "s", 0)
    with pytest.raises(UserError, match="not a database URL"):
        create_study("not a url", "s", 0)


CLAIMER = """
import json, pathlib, sys, time
import optuna
from tasks.sweep import claim_trial, open_storage
url, folder, n_procs = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
rdb = open_storage(url)
study = optuna.load_study(study_name="s", storage=rdb)
(folder / f"ready-{sys.argv[4]}").touch()
while len(list(folder.glob("ready-*"))) < n_procs:  # start claiming together, after the slow imports
    time.sleep(0.01)
got = []
while (trial := claim_trial(study, rdb)) is not None:
    got.append(trial.number)
    trial.suggest_categorical("k", [16])  # a one-choice parameter: the sampler reads no trials before it is stored
    study.tell(trial, float(trial.number))
    time.sleep(0.05)  # a trial takes time: without it one process can drain the queue before the other wakes
print(json.dumps(got))
"""


def test_worker_processes_claim_each_queued_trial_exactly_once(tmp_path):
    # Measured: with pysqlite's default transactions (no BEGIN IMMEDIATE) such processes double-claim tickets
    # and then crash telling a finished trial.
    url = f"sqlite:///{tmp_path}/optuna.db"
    create_study(url, "s", 0)
    enqueue_trials(open_storage(url), "s", 40)
    cmd = [sys.executable, "-c", CLAIMER, url, str(tmp_path), "2"]
    procs = [subprocess.Popen([*cmd, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    claimed = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert all(claimed), claimed  # both processes took some
    assert sorted(n for got in claimed for n in got) == list(range(40))  # every ticket once, none twice
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert len(trials) == 40 and all(t.state == TrialState.COMPLETE for t in trials)  # no trial created beyond the queue


def test_pruned_trial_ends_its_run_killed_and_bad_settings_fail(mlflow_store, tiny_data):
    with mlflow.start_run() as parent:
        pass
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes any positive MSE
    space = SweepSpace(codebook_sizes=(16,), embedding_dims=(4,), anti_collapse=(False,), cosine_sim=(False,))
    config = SweepConfig(epochs=2, overrides=FIXED, space=space, parent_run_id=parent.info.run_id)
    assert run_trial(study, study.ask(), config, tiny_data) == TrialState.PRUNED
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_done"] == 1  # stopped after epoch 1 of 2
    assert trial.user_attrs["val_psnr"] > 0 and "val_perplexity" in trial.user_attrs
    run = mlflow.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.tags["optuna_state"] == "PRUNED"
    assert run.info.run_name.startswith("trial-000-")
    assert not list((mlflow_store / "runs").glob("sweep-*/trial-*"))  # its checkpoint folder is cleaned up

    broken = SweepConfig(epochs=1, overrides={**FIXED, "no_such_setting": 1}, space=space)
    assert run_trial(study, study.ask(), broken, tiny_data) == TrialState.FAIL
    assert "no_such_setting" in study.trials[1].user_attrs["error"]


def test_sweep_on_two_worker_processes_runs_every_trial_once_and_registers_the_best(mlflow_store, tiny_data):
    result = run_sweep(tiny_data, n_trials=6, workers=2, preset_name="demo", epochs=2, seed=0, study_name="tiny", space=TINY_SPACE, overrides=FIXED)

    # the study: exactly the 6 requested trials, numbers 0..5, none lost to a crash or a race
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlflow/optuna.db")
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(6))
    states = Counter(t.state for t in trials)
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED} and states[TrialState.COMPLETE] >= 1, states
    assert result.counts == {s.name: n for s, n in states.items()}

    # one nested run per trial under the parent; finished runs FINISHED, pruned ones KILLED
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = mlflow.search_runs(experiment_ids=[parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'", output_format="list")
    assert sorted(int(r.data.tags["sweep_trial"]) for r in children) == list(range(6))
    for t in trials:
        run = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "KILLED")
        assert {"val_psnr", "val_utilisation", "val_perplexity"} <= set(t.user_attrs)

    # the parent records the best trial
    best = study.best_trial
    assert result.best_value == best.value and result.best_params == best.params
    assert parent.data.metrics["best_val_mse"] == pytest.approx(best.value)
    assert parent.data.params["best.codebook_size"] == str(best.params["codebook_size"])
    assert parent.data.tags["best_trial_run_id"] == best.user_attrs["mlflow_run_id"] == result.best_run_id
    assert parent.data.tags["synthetic"] in ("true", "false") and "git_commit" in parent.data.tags

    # the best model is registered (version 1 here), champion, and it is the best trial's model
    assert result.model_uri == "models:/galaxy-vqvae/1"
    version = mlflow.MlflowClient().get_model_version("galaxy-vqvae", "1")
    assert version.run_id == result.best_run_id
    assert str(mlflow.MlflowClient().get_model_version_by_alias("galaxy-vqvae", "champion").version) == "1"
    vqvae, _ = load_vqvae_from_uri(result.model_uri)
    assert (vqvae.config.codebook_size, vqvae.config.embedding_dim) == (best.params["codebook_size"], best.params["embedding_dim"])

    # A6: figures and a results table with one row per trial
    names = {a.path for a in mlflow.artifacts.list_artifacts(run_id=result.parent_run_id, artifact_path="sweep")}
    assert {"sweep/results.csv", "sweep/metrics_table.png", "sweep/mse_by_size.png", "sweep/reconstructions_by_dim.png",
            "sweep/reconstructions_by_size.png", "sweep/logs"} <= names
    rows = list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/sweep/results.csv"))))
    assert sorted(int(r["trial"]) for r in rows) == list(range(6))
    assert {"val_psnr", "val_utilisation", "val_perplexity"} <= set(rows[0])
