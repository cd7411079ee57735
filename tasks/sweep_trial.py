"""One sweep trial = one child MLflow run, and the worker loop that runs trials with Optuna's ``study.optimize``.

A trial trains one VQ-VAE through ``tasks.vqvae.train_vqvae_run`` as a child run of the sweep's parent (tag
``mlflow.parentRunId``), reports validation MSE after every epoch to the median pruner and ends COMPLETE (run
FINISHED), PRUNED (run KILLED) or FAIL (run FAILED). A worker runs ``study.optimize`` until N trials are
COMPLETE or PRUNED (``MaxTrialsCallback``; W workers overshoot N by up to W - 1 trials, those still running
when the count is reached) or N trials have failed.

A worker killed mid-trial leaves its trial RUNNING and its MLflow run RUNNING. After the heartbeat's grace
period another worker fails the trial and runs a retry with the same parameters (``tasks.sweep_study``); the
retry ends the dead try's MLflow run FAILED (``end_stale_runs``), as the parent run does for trials of its own
workers once they have exited.

Fault injection: with ``GALAXY_SWEEP_EXIT_IN_TRIAL=k`` the worker running trial k exits (``os._exit(3)``) at
the end of its first epoch, inside the trial and its MLflow run: the tests' deterministic kill. With
``GALAXY_SWEEP_HANG_IN_TRIAL=k`` it stops there instead (its heartbeat still beating) until a test kills it.

A worker that loses the study's database (server down) ends with one line saying so (``storage_errors``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import mlflow
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from model.config import from_preset
from model.data import load_prepared
from model.errors import UserError
from model.vqvae import PRESETS
from tasks import tracking
from tasks import vqvae as vqvae_stage  # a trial is one run of the VQ-VAE stage
from tasks.runs import runs_dir
from tasks.sweep_space import SweepConfig, describe
from tasks.sweep_study import (
    CONFIG_ATTR,
    FINISHED,
    count,
    first_beat,
    load_sweep_study,
    storage_errors,
    storage_url,
)

EXPERIMENT = "galaxy-sweep"
EXIT_ENV = "GALAXY_SWEEP_EXIT_IN_TRIAL"  # fault injection: the trial number whose worker exits after epoch 1
HANG_ENV = "GALAXY_SWEEP_HANG_IN_TRIAL"  # fault injection: the trial number whose worker waits after epoch 1
# per-try user attrs: a retry inherits its failed try's, and must not report them as its own
TRY_ATTRS = (
    "mlflow_run_id",
    "model_uri",
    "epochs_done",
    "error",
    "val_psnr",
    "val_utilisation",
    "val_perplexity",
    "val_effective_usage",
)

log = logging.getLogger(__name__)


def safe_name(name: str) -> str:
    """A study name as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def worker_id(pid: int | None = None) -> str:
    """host:pid, the user attr that tells which process ran a trial."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def end_stale_runs(study_name: str, states: dict[int, TrialState]) -> int:
    """End the RUNNING MLflow runs of the study's trials that Optuna already finished (their worker died):
    KILLED when pruned, FAILED otherwise. Runs of trials still RUNNING are left alone; returns how many ended."""
    client = mlflow.MlflowClient()
    query = f"tags.sweep_study = '{study_name}' and attributes.status = 'RUNNING'"
    n = 0
    for run in mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=query, output_format="list"):
        state = states.get(int(run.data.tags.get("sweep_trial", -1)))
        if state is None or not state.is_finished():
            continue
        client.set_tag(run.info.run_id, "optuna_state", state.name)
        client.set_terminated(run.info.run_id, status="KILLED" if state == TrialState.PRUNED else "FAILED")
        n += 1
    return n


def _record(trial: optuna.Trial, metrics: dict[str, float], prefix: str) -> None:
    """PSNR, utilisation, perplexity and effective usage as the trial's user attrs."""
    for key in ("psnr", "utilisation", "perplexity", "effective_usage"):
        value = metrics.get(f"{prefix}{key}")
        if value is not None and math.isfinite(float(value)):
            trial.set_user_attr(f"val_{key}", float(value))


def _start_retry(study: optuna.Study, trial: optuna.Trial) -> None:
    """When ``trial`` retries tries whose worker died: end their MLflow runs, forget their per-try attrs."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    if not history:
        return
    log.info("trial %d retries trial %d", trial.number, history[0])
    trial.set_user_attr("retry_of", history[0])
    end_stale_runs(study.study_name, {n: TrialState.FAIL for n in history})
    for key in TRY_ATTRS:
        if trial.user_attrs.get(key) is not None:
            trial.set_user_attr(key, None)


def make_objective(
    study: optuna.Study, config: SweepConfig, data_dir: str | Path, storage: RDBStorage | None = None
) -> Callable[[optuna.Trial], float]:
    """The function ``study.optimize`` calls: one trial, returns its final validation MSE. With the study's
    ``storage`` (heartbeats on), a trial beats once before anything else (``first_beat``)."""
    client = mlflow.MlflowClient()
    exit_in, hang_in = os.environ.get(EXIT_ENV), os.environ.get(HANG_ENV)

    def objective(trial: optuna.Trial) -> float:
        if storage is not None:
            first_beat(storage, study.study_name, trial.number)
        _start_retry(study, trial)
        trial.set_user_attr("worker", worker_id())
        child: dict[str, str] = {}
        last: dict[str, float] = {}
        # each trial its own checkpoint folder: two trials with equal settings must not resume each other
        folder = runs_dir() / f"sweep-{safe_name(study.study_name)}" / f"trial-{trial.number:04d}"
        try:
            params = config.space.suggest(trial)
            overrides = {**config.overrides, **params}
            if config.epochs is not None:
                overrides["epochs"] = config.epochs
            train_cfg = from_preset(PRESETS, config.preset_name, **overrides)

            def on_epoch_end(epoch: int, metrics: dict) -> None:
                if not child:
                    active = mlflow.active_run()
                    child["run_id"] = active.info.run_id
                    trial.set_user_attr("mlflow_run_id", child["run_id"])
                    name = f"trial-{trial.number:03d}-{active.info.run_name}"
                    client.set_tag(child["run_id"], "mlflow.runName", name)
                last.update(metrics)
                if exit_in == str(trial.number):
                    print(f"{EXIT_ENV}={exit_in}: exiting inside trial {trial.number}", file=sys.stderr, flush=True)
                    os._exit(3)
                if hang_in == str(trial.number):
                    print(f"{HANG_ENV}={hang_in}: waiting inside trial {trial.number}", file=sys.stderr, flush=True)
                    while True:  # until killed
                        time.sleep(1)
                trial.report(float(metrics["val_mse"]), step=epoch)
                if epoch < train_cfg.epochs and trial.should_prune():  # after the last epoch nothing is saved
                    raise optuna.TrialPruned(f"val_mse {metrics['val_mse']:.4g} at epoch {epoch}")

            tags = {"sweep_study": study.study_name, "sweep_trial": str(trial.number), "sweep_params": describe(params)}
            if config.parent_run_id:
                tags["mlflow.parentRunId"] = config.parent_run_id  # nests the run without resuming the parent here
            log.info("trial %d: %s", trial.number, describe(params))
            ref = vqvae_stage.train_vqvae_run(
                data_dir,
                config.preset_name,
                overrides=overrides,
                limit=config.limit,
                nested=True,
                register_as=None,
                on_epoch_end=on_epoch_end,
                extra_tags=tags,
                resume=False,
                experiment=EXPERIMENT,
                run_folder=folder,
            )
        except optuna.TrialPruned:
            _record(trial, last, "val_")
            trial.set_user_attr("epochs_done", int(last.get("epoch", 0)))
            if child:
                client.set_tag(child["run_id"], "optuna_state", "PRUNED")
                client.set_terminated(child["run_id"], status="KILLED")  # the stage's context ended it FAILED
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except Exception as err:  # Optuna records the trial FAIL and the worker goes on (catch=(Exception,))
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            if child:
                client.set_tag(child["run_id"], "optuna_state", "FAIL")
            raise
        _record(trial, ref.metrics, "final_val_")
        trial.set_user_attr("mlflow_run_id", ref.run_id)
        trial.set_user_attr("model_uri", ref.model_uri)
        trial.set_user_attr("epochs_done", int(last.get("epoch", 0)))
        client.set_tag(ref.run_id, "optuna_state", "COMPLETE")
        shutil.rmtree(folder, ignore_errors=True)  # the checkpoint is an artifact of the trial's run
        log.info("trial %d: val MSE %.5g", trial.number, ref.metrics["final_val_mse"])
        return ref.metrics["final_val_mse"]

    return objective


def run_worker(study_name: str, storage: str | None, data_dir: str | Path, worker_index: int = 0) -> int:
    """Run trials of the study until it has N COMPLETE or PRUNED trials (or N failures); returns how many ran.

    The study and its SweepConfig come from ``create_study``; the data folder must hold the study's data.
    """
    tracking.setup()
    with storage_errors(storage_url(storage), study_name):
        study, rdb = load_sweep_study(storage, study_name, worker_index)
        if CONFIG_ATTR not in study.user_attrs:
            raise UserError("study", f"{study_name!r} has no sweep config; start sweeps with galaxy sweep")
        config = SweepConfig.from_dict(study.user_attrs[CONFIG_ATTR])
        data = load_prepared(data_dir)
        if config.data_key and data.key != config.data_key:
            theirs = config.data_key[:12]
            raise UserError(data_dir, f"holds data {data.key[:12]}, but study {study_name!r} sweeps data {theirs}")
        if count(study) >= config.n_trials:  # a late worker must not start an extra trial
            return 0
        ran: list[int] = []
        study.optimize(
            make_objective(study, config, data_dir, rdb),
            catch=(Exception,),  # a broken trial must not stop the sweep; the study records it FAIL
            callbacks=[
                MaxTrialsCallback(config.n_trials, states=FINISHED),
                MaxTrialsCallback(config.n_trials, states=(TrialState.FAIL,)),  # give up when N trials failed
                lambda _study, frozen: ran.append(frozen.number),
            ],
        )
        log.info("worker %d: ran %d trials, %d finished in the study", worker_index, len(ran), count(study))
    return len(ran)


def worker_main(study_name: str, data_dir: str | Path, worker_index: int) -> int:
    """A worker process (``galaxy sweep-worker``): log lines named by worker, SIGTERM unwinds the trial (Optuna
    tells it FAIL, its MLflow run ends FAILED). Both are undone on return, for callers in a test process."""
    handler = logging.StreamHandler()  # our own handler: imported libraries may have configured the root logger
    handler.setFormatter(logging.Formatter(f"%(asctime)s worker-{worker_index} %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # Prefect's root handler would print every line a second time
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return run_worker(study_name, None, data_dir, worker_index)
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.removeHandler(handler)
        log.propagate = True
