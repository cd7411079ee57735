"""Optuna sweeps over codebook size, embedding dim and quantizer options (SPEC O3), with the A6 comparison.

How a sweep runs (``run_sweep``):

1. The parent MLflow run starts (experiment ``galaxy-sweep``). The study is created ONCE, before any
   worker starts (``create_study``): several processes creating a fresh SQLite study race on its schema
   (``UNIQUE constraint failed: alembic_version.version_num``) and lose trials.
2. Exactly N trials are queued as WAITING "tickets" with no fixed parameters (the sampler still chooses
   them). W worker processes (``python -m tasks.sweep worker``, on this machine or any machine that
   reaches the same RDB storage) each take one ticket at a time (``claim_trial``: an atomic
   WAITING -> RUNNING update) until none is left, so W workers together run exactly N trials.
   (``MaxTrialsCallback`` counts finished trials after each trial ends, so W workers overshoot N by up to
   W - 1: the trials still running when the count is reached are extra.)
3. A trial trains one VQ-VAE through ``tasks.vqvae.train_vqvae_run`` as a child MLflow run of the parent
   (tag ``mlflow.parentRunId``), reports validation MSE after every epoch to a ``MedianPruner``, and ends
   COMPLETE (child run FINISHED), PRUNED (child run KILLED) or FAIL (child run FAILED).
4. The parent run records the best trial (params ``best.*``, metric ``best_val_mse``, tag
   ``best_trial_run_id``), registers the best trial's logged model as ``galaxy-vqvae`` (alias ``champion``
   when it beats the current one) and logs the A6 figures and ``results.csv`` under ``sweep/``.

Storage: any SQLAlchemy URL (``sqlite:///mlflow/optuna.db`` by default; PostgreSQL when machines share a
study). SQLite gets a long busy timeout and ``BEGIN IMMEDIATE`` transactions: pysqlite otherwise opens a
transaction only at the first write, after the read that checked the ticket was still WAITING, so two
workers can both claim one ticket. PostgreSQL and MySQL lock the row with ``SELECT ... FOR UPDATE``.

Names: K codebook size, D embedding dim, N trials, W workers.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import mlflow
import numpy as np
import optuna
import sqlalchemy
from matplotlib.figure import Figure
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from prefect import task
from prefect.cache_policies import NO_CACHE

from model.atlas import comparison_figure, metrics_table_figure
from model.data import PreparedData, load_prepared
from model.errors import UserError
from model.train_vqvae import reconstruct_images
from model.utils import pick_device
from model.vqvae import load_vqvae, preset
from tasks import tracking
from tasks import vqvae as vqvae_stage

EXPERIMENT = "galaxy-sweep"
DEFAULT_STORAGE = "sqlite:///mlflow/optuna.db"
STORAGE_ENV = "GALAXY_SWEEP_STORAGE"  # how run_sweep hands the storage URL to its workers (not on argv: passwords)
SQLITE_TIMEOUT_S = 120.0  # how long a SQLite connection waits for the write lock before failing
SETTINGS_ATTR = "sweep_settings"  # study user attr written by create_study: sampler and pruner settings
CONFIG_ATTR = "sweep_config"  # study user attr written by run_sweep: the SweepConfig every worker uses
A6_IMAGES = 8  # validation images shown in the A6 reconstruction figures
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# what a sweep varies


def _around(value: int, minimum: int) -> tuple[int, ...]:
    """value/4, value/2, value, 2*value (at least ``minimum``, deduplicated, ascending)."""
    return tuple(sorted({max(minimum, value * f // 4) for f in (1, 2, 4, 8)}))


@dataclass(frozen=True)
class SweepSpace:
    """The choices a sweep may make; every other setting comes from the preset (and the sweep's overrides)."""

    codebook_sizes: tuple[int, ...] = (64, 128, 256, 512)  # K choices (demo preset: K/4 .. 2K around 256)
    embedding_dims: tuple[int, ...] = (8, 16, 32, 64)  # D choices (demo preset: D/4 .. 2D around 32)
    quantizers: tuple[str, ...] = ("lucidrains",)  # "lucidrains" and/or "simple" (the article's straight-through VQ)
    anti_collapse: tuple[bool, ...] = (True, False)  # lucidrains: k-means init + dead-code replacement on / off
    cosine_sim: tuple[bool, ...] = (False, True)  # lucidrains: cosine-similarity code lookup on / off
    dead_code_threshold: int = 2  # threshold_ema_dead_code used when anti_collapse is on

    def __post_init__(self) -> None:
        for name in ("codebook_sizes", "embedding_dims", "quantizers", "anti_collapse", "cosine_sim"):
            values = tuple(getattr(self, name))
            if not values:
                raise ValueError(f"SweepSpace.{name} needs at least one choice")
            object.__setattr__(self, name, values)

    @classmethod
    def from_preset(cls, name: str = "demo", **overrides: Any) -> SweepSpace:
        """K and D choices at 1/4, 1/2, 1 and 2 times the preset's (after ``overrides``); other fields as given."""
        space_fields = {f.name for f in fields(cls)}
        mine = {k: v for k, v in overrides.items() if k in space_fields}
        model_cfg, _ = preset(name, **{k: v for k, v in overrides.items() if k not in space_fields})
        sizes = dict(codebook_sizes=_around(model_cfg.codebook_size, 2), embedding_dims=_around(model_cfg.embedding_dim, 1))
        return cls(**{**sizes, **mine})

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Ask the trial for its choices; returns model overrides for ``preset()``."""
        params: dict[str, Any] = {
            "codebook_size": trial.suggest_categorical("codebook_size", list(self.codebook_sizes)),
            "embedding_dim": trial.suggest_categorical("embedding_dim", list(self.embedding_dims)),
        }
        params["quantizer"] = quantizer = trial.suggest_categorical("quantizer", list(self.quantizers))
        if quantizer == "lucidrains":  # the anti-collapse options exist only for VectorQuantize
            anti = trial.suggest_categorical("anti_collapse", list(self.anti_collapse))
            params["kmeans_init"] = bool(anti)
            params["threshold_ema_dead_code"] = self.dead_code_threshold if anti else 0
            params["use_cosine_sim"] = bool(trial.suggest_categorical("cosine_sim", list(self.cosine_sim)))
        return params

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists), for the study's user attrs."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpace:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def describe(params: dict[str, Any], *, sizes: bool = True) -> str:
    """A short label for a trial's choices, e.g. 'K 256, D 32, k-means + dead-code, cosine'."""
    parts = [f"K {params['codebook_size']}", f"D {params['embedding_dim']}"] if sizes else []
    if params.get("quantizer", "lucidrains") == "simple":
        parts.append("simple ST-VQ")
    else:
        options = [name for name, key in (("k-means + dead-code", "anti_collapse"), ("cosine", "cosine_sim")) if params.get(key)]
        parts.append(", ".join(options) if options else "EMA only")
    return ", ".join(parts)


@dataclass(frozen=True)
class SweepConfig:
    """What every worker of one sweep shares; stored in the study so that a worker needs only its name."""

    preset_name: str = "demo"  # model/train preset each trial starts from
    epochs: int | None = None  # epochs per trial (None: the preset's)
    limit: int | None = None  # first N training images per trial (None: all)
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed settings for every trial, before its own choices
    space: SweepSpace = field(default_factory=SweepSpace)  # what the trials choose
    parent_run_id: str | None = None  # MLflow run every trial's run nests under
    data_key: str | None = None  # the prepared data's content key: workers check they read the same data

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["space"] = self.space.to_dict()
        d["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        d = dict(d)
        if "space" in d:
            d["space"] = SweepSpace.from_dict(d["space"])
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------
# storage and study


def storage_url(storage: str | None) -> str:
    """The storage URL (default ``sqlite:///mlflow/optuna.db``), with a SQLite file's folder created."""
    url = storage or DEFAULT_STORAGE
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError("storage", f"{url!r} is not a database URL (e.g. sqlite:///mlflow/optuna.db or postgresql://...)") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError("storage", "an in-memory SQLite database cannot be shared by worker processes; give a file")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def masked(url: str) -> str:
    """The URL with any password hidden (for params, tags and messages)."""
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def _serialise_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Open every SQLite transaction with BEGIN IMMEDIATE (the write lock first), so read-check-write is atomic."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not BEGIN by itself (it would, late)

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage initialised lack the listeners


def open_storage(storage: str | None) -> RDBStorage:
    """An Optuna RDB storage that several processes can share (see the module docstring)."""
    url = storage_url(storage)
    if sqlalchemy.engine.make_url(url).get_backend_name() == "sqlite":
        rdb = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
        _serialise_sqlite(rdb.engine)
        return rdb
    return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def create_study(storage: str | None, study_name: str, seed: int = 0, *, startup_trials: int = 4, warmup_epochs: int = 1) -> str:
    """Create the study once, before any worker starts (or load it when it exists); returns its name.

    One objective, minimised: validation reconstruction MSE. The sampler and pruner settings are stored in
    the study so that every worker builds the same ones (``load_sweep_study``): a seeded TPE sampler whose
    first ``startup_trials`` trials are random, and a median pruner that waits for ``startup_trials``
    finished trials and prunes from epoch ``warmup_epochs`` on.
    """
    if startup_trials < 0 or warmup_epochs < 0:
        raise UserError("sweep", "startup_trials and warmup_epochs must be >= 0")
    study = optuna.create_study(storage=open_storage(storage), study_name=study_name, direction="minimize", load_if_exists=True)
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, {"seed": int(seed), "startup_trials": int(startup_trials), "warmup_epochs": int(warmup_epochs)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_mse"])
    return study.study_name


def load_sweep_study(rdb: RDBStorage, study_name: str, worker_index: int = 0) -> optuna.Study:
    """The study with this worker's sampler (seed + worker index: workers must not draw the same random trials) and pruner."""
    try:
        settings = optuna.load_study(study_name=study_name, storage=rdb).user_attrs.get(SETTINGS_ATTR, {})
    except KeyError:
        raise UserError("study", f"{study_name!r} not found in {masked(str(rdb.url))}; create it first (create_study or run_sweep)") from None
    startup = int(settings.get("startup_trials", 4))
    sampler = optuna.samplers.TPESampler(seed=int(settings.get("seed", 0)) + worker_index, n_startup_trials=startup, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=int(settings.get("warmup_epochs", 1)))
    return optuna.load_study(study_name=study_name, storage=rdb, sampler=sampler, pruner=pruner)


def enqueue_trials(rdb: RDBStorage, study_name: str, n: int) -> None:
    """Queue ``n`` more trials (WAITING, no fixed parameters) for the study's workers to take."""
    study = optuna.load_study(study_name=study_name, storage=rdb)
    for _ in range(n):
        study.enqueue_trial({}, skip_if_exists=False)


def claim_trial(study: optuna.Study, rdb: RDBStorage) -> optuna.Trial | None:
    """Take one queued trial, atomically marking it RUNNING; None when the queue is empty (never creates a trial)."""
    study_id = rdb.get_study_id_from_name(study.study_name)
    # read through the study (its storage cache must learn the trial, or the trial's suggest_* calls fail)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if rdb.set_trial_state_values(trial_id, state=TrialState.RUNNING):  # False: another worker won it
                return optuna.Trial(study, trial_id)  # what Study.ask does after popping a queued trial
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


# ----------------------------------------------------------------------------------------------------------
# one trial, one worker


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _trial_metrics(trial: optuna.Trial, metrics: dict[str, float], prefix: str) -> None:
    """PSNR, utilisation, perplexity and effective usage as the trial's user attrs."""
    for key in ("psnr", "utilisation", "perplexity", "effective_usage"):
        value = metrics.get(f"{prefix}{key}")
        if value is not None and math.isfinite(float(value)):
            trial.set_user_attr(f"val_{key}", float(value))


def run_trial(study: optuna.Study, trial: optuna.Trial, config: SweepConfig, data_dir: str | Path) -> TrialState:
    """Train one trial's VQ-VAE as a child MLflow run, report val MSE each epoch for pruning, tell the study."""
    params = config.space.suggest(trial)
    overrides = {**config.overrides, **params}
    if config.epochs is not None:
        overrides["epochs"] = config.epochs
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    client = mlflow.MlflowClient()
    child: dict[str, str] = {}
    last: dict[str, float] = {}
    try:
        _, train_cfg = preset(config.preset_name, **overrides)
    except (ValueError, UserError) as err:
        trial.set_user_attr("error", str(err)[:500])
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d: invalid settings: %s", trial.number, err)
        return TrialState.FAIL

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        if not child:
            active = mlflow.active_run()
            child["run_id"] = active.info.run_id
            trial.set_user_attr("mlflow_run_id", child["run_id"])
            client.set_tag(child["run_id"], "mlflow.runName", f"trial-{trial.number:03d}-{active.info.run_name}")
        last.update(metrics)
        trial.report(float(metrics["val_mse"]), step=epoch)
        if epoch < train_cfg.epochs and trial.should_prune():  # after the last epoch there is nothing left to save
            raise optuna.TrialPruned(f"val_mse {metrics['val_mse']:.4g} at epoch {epoch}")

    tags = {"sweep_study": study.study_name, "sweep_trial": str(trial.number), "sweep_params": describe(trial.params)}
    if config.parent_run_id:
        tags["mlflow.parentRunId"] = config.parent_run_id  # nests the run without resuming the parent here
    folder = vqvae_stage.runs_dir() / f"sweep-{_safe(study.study_name)}" / f"trial-{trial.number:04d}"
    log.info("trial %d: %s", trial.number, describe(trial.params))
    try:
        # each trial its own checkpoint folder: two trials with equal settings must not resume each other
        ref = vqvae_stage.train_vqvae_run(
            data_dir, config.preset_name, overrides=overrides, limit=config.limit, nested=True,
            register_as=None, on_epoch_end=on_epoch_end, extra_tags=tags, resume=False,
            experiment=EXPERIMENT, run_folder=folder,
        )
    except optuna.TrialPruned as pruned:
        _trial_metrics(trial, last, "val_")
        trial.set_user_attr("epochs_done", int(last.get("epoch", 0)))
        if child:
            client.set_tag(child["run_id"], "optuna_state", "PRUNED")
            client.set_terminated(child["run_id"], status="KILLED")  # the stage's context ended it FAILED
        study.tell(trial, state=TrialState.PRUNED)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("trial %d pruned: %s", trial.number, pruned)
        return TrialState.PRUNED
    except Exception as err:  # a broken trial must not stop the sweep; the study records it as FAIL
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
        if child:
            client.set_tag(child["run_id"], "optuna_state", "FAIL")
        study.tell(trial, state=TrialState.FAIL)
        log.exception("trial %d failed", trial.number)
        return TrialState.FAIL
    except BaseException:  # interrupted: leave no RUNNING trial behind
        study.tell(trial, state=TrialState.FAIL)
        raise
    _trial_metrics(trial, ref.metrics, "final_val_")
    trial.set_user_attr("mlflow_run_id", ref.run_id)
    trial.set_user_attr("model_uri", ref.model_uri)
    trial.set_user_attr("epochs_done", int(last.get("epoch", 0)))
    client.set_tag(ref.run_id, "optuna_state", "COMPLETE")
    frozen = study.tell(trial, ref.metrics["final_val_mse"])
    shutil.rmtree(folder, ignore_errors=True)  # the checkpoint is an artifact of the trial's run
    log.info("trial %d: val MSE %.5g", trial.number, ref.metrics["final_val_mse"])
    return frozen.state


def run_worker(
    study_name: str,
    storage: str | None,
    data_dir: str | Path,
    n_trials: int | None = None,
    preset_name: str | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    parent_run_id: str | None = None,
    space: SweepSpace | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    worker_index: int = 0,
) -> int:
    """Take the study's queued trials one by one until none is left (or ``n_trials`` ran); returns how many ran.

    Settings left as None come from the study's SweepConfig (written by ``run_sweep``), else the defaults.
    """
    tracking.setup()
    rdb = open_storage(storage)
    study = load_sweep_study(rdb, study_name, worker_index)
    config = SweepConfig.from_dict(study.user_attrs.get(CONFIG_ATTR, {}))
    given = dict(preset_name=preset_name, epochs=epochs, limit=limit, parent_run_id=parent_run_id, space=space, overrides=overrides)
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    data = load_prepared(data_dir)
    if config.data_key and data.key != config.data_key:
        raise UserError(data_dir, f"holds data {data.key[:12]}, but study {study_name!r} sweeps data {config.data_key[:12]}")
    done = 0
    while n_trials is None or done < n_trials:
        trial = claim_trial(study, rdb)
        if trial is None:
            break
        run_trial(study, trial, config, data_dir)
        done += 1
    log.info("worker %d: %d trials, queue empty", worker_index, done)
    return done


# ----------------------------------------------------------------------------------------------------------
# the whole sweep


@dataclass(frozen=True)
class SweepResult:
    """What a sweep hands on: its parent run, study, best trial and the registered best model."""

    parent_run_id: str
    study_name: str
    best_params: dict[str, Any]
    best_value: float  # validation MSE of the best trial
    model_uri: str  # models:/galaxy-vqvae/<version>
    version: str
    best_run_id: str = ""  # the best trial's own MLflow run
    counts: dict[str, int] = field(default_factory=dict)  # trials by final state (COMPLETE, PRUNED, FAIL, ...)


def launch_workers(study_name: str, storage: str, data_dir: str | Path, workers: int, log_dir: Path) -> list[tuple[int, int, Path]]:
    """Run W ``python -m tasks.sweep worker`` processes on the study and wait; returns (pid, exit code, log) each."""
    env = dict(os.environ)
    env[STORAGE_ENV] = storage
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tracking.ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    env.setdefault("GALAXY_PROGRESS", "0")
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(workers):
        path = log_dir / f"worker-{i}.log"
        with open(path, "wb") as out:
            cmd = [sys.executable, "-m", "tasks.sweep", "worker", "--study", study_name, "--data", str(Path(data_dir).resolve()), "--worker-index", str(i)]
            procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), path))
    try:
        return [(proc.pid, proc.wait(), path) for proc, path in procs]
    except BaseException:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def fail_abandoned(rdb: RDBStorage, study: optuna.Study, pids: Sequence[int]) -> int:
    """Mark FAIL the trials left RUNNING by this machine's exited workers (killed mid-trial); returns how many."""
    ours = {f"{socket.gethostname()}:{pid}" for pid in pids}
    study_id = rdb.get_study_id_from_name(study.study_name)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") in ours:
            rdb.set_trial_state_values(rdb.get_trial_id_from_study_id_trial_number(study_id, t.number), state=TrialState.FAIL)
            n += 1
    return n


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def run_sweep(
    data_dir: str | Path,
    n_trials: int,
    workers: int,
    storage: str | None = None,
    preset_name: str = "demo",
    epochs: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    study_name: str | None = None,
    *,
    space: SweepSpace | None = None,
    overrides: dict[str, Any] | None = None,
    startup_trials: int | None = None,
    warmup_epochs: int = 1,
) -> SweepResult:
    """Run N trials on W worker processes sharing one study; register the best model and log the A6 figures.

    ``space`` defaults to K and D at 1/4..2x the preset's; ``overrides`` are fixed settings for every trial;
    ``startup_trials`` (random trials before TPE, finished trials before pruning) defaults to N // 3 in [2, 8];
    pruning starts at epoch ``warmup_epochs``.
    """
    if n_trials < 1 or workers < 1:
        raise UserError("sweep", f"needs at least one trial and one worker, got trials={n_trials} workers={workers}")
    tracking.setup()
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    try:
        space = space or SweepSpace.from_preset(preset_name, **overrides)
        preset(preset_name, **overrides)
    except ValueError as err:
        raise UserError(f"preset {preset_name}", str(err)) from None
    url = storage_url(storage)
    study_name = study_name or f"sweep-{preset_name}-{data.key[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    startup = startup_trials if startup_trials is not None else max(2, min(8, n_trials // 3))
    workers = min(workers, n_trials)
    tags = tracking.base_tags(data.meta, pick_device(None).type, stage="sweep", preset=preset_name, study=study_name, storage=masked(url))
    t0 = time.perf_counter()
    with tracking.run(EXPERIMENT, tracking.run_name(f"sweep-{preset_name}", data.meta), tags) as parent:
        parent_id = parent.info.run_id
        mlflow.log_params(tracking.flatten({
            "sweep": {"trials": n_trials, "workers": workers, "seed": seed, "study": study_name, "storage": masked(url),
                      "startup_trials": startup, "warmup_epochs": warmup_epochs, "preset": preset_name, "epochs": epochs, "limit": limit},
            "space": space.to_dict(), "fixed": overrides, "data": {"dir": str(data.root), "key": data.key},
        }))
        create_study(url, study_name, seed, startup_trials=startup, warmup_epochs=warmup_epochs)
        rdb = open_storage(url)
        study = optuna.load_study(study_name=study_name, storage=rdb)
        config = SweepConfig(preset_name, epochs, limit, overrides, space, parent_id, data.key)
        study.set_user_attr(CONFIG_ATTR, config.to_dict())
        enqueue_trials(rdb, study_name, n_trials)
        log_dir = vqvae_stage.runs_dir() / f"sweep-{_safe(study_name)}"
        outcomes = launch_workers(study_name, url, data.root, workers, log_dir)
        abandoned = fail_abandoned(rdb, study, [pid for pid, _, _ in outcomes])
        for _, _, path in outcomes:
            mlflow.log_artifact(str(path), artifact_path="sweep/logs")
        broken = [(pid, rc, path) for pid, rc, path in outcomes if rc != 0]
        mlflow.set_tags({"worker_failures": str(len(broken)), "abandoned_trials": str(abandoned)})
        mlflow.log_metric("sweep_time_s", time.perf_counter() - t0)
        try:
            result = summarise(study, data, parent_id)
        except UserError:
            if broken:  # no trial finished because the workers died: show why
                pid, rc, path = broken[0]
                raise RuntimeError(f"sweep worker {pid} exited {rc}; last lines of {path}:\n{_tail(path)}") from None
            raise
    if broken:
        log.warning("%d of %d sweep workers exited non-zero; see sweep/logs in run %s", len(broken), len(outcomes), parent_id)
    return result


# ----------------------------------------------------------------------------------------------------------
# the parent run's record: best trial, registered model, A6 figures


def _options(t: FrozenTrial) -> str:
    return describe(t.params, sizes=False)


def results_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per trial (COMPLETE by MSE first, then PRUNED, then the rest): choices, state and validation metrics."""
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}
    rows = []
    for t in sorted(trials, key=lambda t: (order.get(t.state, 2), t.value if t.value is not None else math.inf, t.number)):
        a = t.user_attrs
        rows.append({
            "trial": t.number, "state": t.state.name, "codebook_size": t.params.get("codebook_size"),
            "embedding_dim": t.params.get("embedding_dim"), "quantizer": t.params.get("quantizer"),
            "anti_collapse": t.params.get("anti_collapse"), "cosine_sim": t.params.get("cosine_sim"),
            "epochs_done": a.get("epochs_done"), "val_mse": t.value, "val_psnr": a.get("val_psnr"),
            "val_utilisation": a.get("val_utilisation"), "val_perplexity": a.get("val_perplexity"),
            "val_effective_usage": a.get("val_effective_usage"), "mlflow_run_id": a.get("mlflow_run_id"),
        })
    return rows


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def table_figure(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """The A6 metrics table: one line per trial."""
    def pct(v):
        return None if v is None else 100.0 * v

    lines = [{
        "trial": r["trial"],
        "state": r["state"].lower() + (f" @ epoch {r['epochs_done']}" if r["state"] == "PRUNED" else ""),
        "codebook size K": r["codebook_size"], "embedding dim D": r["embedding_dim"],
        "quantizer options": describe({k: r[k] for k in ("quantizer", "anti_collapse", "cosine_sim")}, sizes=False),
        "val MSE": r["val_mse"], "PSNR (dB)": r["val_psnr"], "utilisation (%)": pct(r["val_utilisation"]), "perplexity": r["val_perplexity"],
    } for r in rows]
    columns = ["trial", "state", "codebook size K", "embedding dim D", "quantizer options", "val MSE", "PSNR (dB)", "utilisation (%)", "perplexity"]
    return metrics_table_figure([{k: ("" if v is None else v) for k, v in line.items()} for line in lines], columns, title=title)


def mse_figure(trials: Sequence[FrozenTrial], title: str) -> Figure:
    """Validation MSE against codebook size (one series per embedding dim) and against trial number."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_size, ax_trial = fig.subplots(1, 2)
    scored = [t for t in trials if t.value is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    dims = sorted({t.params["embedding_dim"] for t in scored})
    colours = {d: f"C{i % 10}" for i, d in enumerate(dims)}
    for d in dims:
        done = sorted((t.params["codebook_size"], t.value) for t in scored if t.params["embedding_dim"] == d and t.state == TrialState.COMPLETE)
        cut = [(t.params["codebook_size"], t.value) for t in scored if t.params["embedding_dim"] == d and t.state == TrialState.PRUNED]
        if done:
            ax_size.plot(*zip(*done), "o", color=colours[d], label=f"D = {d}")
        if cut:
            ax_size.plot(*zip(*cut), "x", color=colours[d], label=f"D = {d} (pruned, last epoch reported)")
    sizes = sorted({t.params["codebook_size"] for t in scored})
    ax_size.set_xscale("log", base=2)
    if sizes:
        ax_size.set_xticks(sizes, [str(k) for k in sizes])
        ax_size.minorticks_off()
    ax_size.set_xlabel("codebook size K")
    ax_size.set_ylabel("validation MSE (images in [-1, 1])")
    ax_size.set_title("By codebook size and embedding dim D")
    ax_size.legend(fontsize=8)
    for state, marker, label in ((TrialState.COMPLETE, "o", "complete"), (TrialState.PRUNED, "x", "pruned")):
        pts = [(t.number, t.value) for t in scored if t.state == state]
        if pts:
            ax_trial.plot(*zip(*pts), marker, color="C0" if state == TrialState.COMPLETE else "C3", label=label, linestyle="none")
    complete = sorted((t.number, t.value) for t in scored if t.state == TrialState.COMPLETE)
    if complete:
        best = list(np.minimum.accumulate([v for _, v in complete]))
        last = max(t.number for t in scored)  # carry the best value on to the last trial
        ax_trial.step([n for n, _ in complete] + [last], best + best[-1:], where="post", color="k", label="best so far")
    ax_trial.set_xlabel("trial number")
    ax_trial.set_ylabel("validation MSE")
    ax_trial.set_title("By trial")
    ax_trial.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return fig


def comparison_trials(trials: Sequence[FrozenTrial], vary: str, fixed: str) -> tuple[Any, list[FrozenTrial]]:
    """For A6: the value of ``fixed`` met with the most distinct values of ``vary`` among COMPLETE trials (ties:
    the lower best MSE), and the best trial for each value of ``vary`` there, in ascending ``vary``."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None, []
    groups: dict[Any, dict[Any, FrozenTrial]] = {}
    for t in sorted(complete, key=lambda t: t.value):
        groups.setdefault(t.params[fixed], {}).setdefault(t.params[vary], t)  # first seen = lowest MSE
    chosen = min(groups, key=lambda g: (-len(groups[g]), min(t.value for t in groups[g].values())))
    return chosen, [groups[chosen][v] for v in sorted(groups[chosen])]


def trial_reconstructions(run_id: str, originals: np.ndarray) -> np.ndarray:
    """Reconstruct ``originals`` (n, S, S, 3) uint8 with the checkpoint a trial's run logged."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint/checkpoint.pt", dst_path=tmp)
        model, _ = load_vqvae(path)
    return reconstruct_images(model, originals, device="cpu")


def a6_figures(trials: Sequence[FrozenTrial], originals: np.ndarray) -> dict[str, Figure]:
    """Reconstructions of the same images across embedding dims (fixed K) and across codebook sizes (fixed D)."""
    cache: dict[str, np.ndarray] = {}

    def recon(t: FrozenTrial) -> np.ndarray:
        run_id = t.user_attrs["mlflow_run_id"]
        if run_id not in cache:
            cache[run_id] = trial_reconstructions(run_id, originals)
        return cache[run_id]

    def label(t: FrozenTrial, symbol: str, key: str) -> str:
        psnr = t.user_attrs.get("val_psnr")
        return f"{symbol} = {t.params[key]}\ntrial {t.number}: {_options(t)}" + (f"\nval PSNR {psnr:.1f} dB" if psnr is not None else "")

    figures = {}
    k, by_dim = comparison_trials(trials, vary="embedding_dim", fixed="codebook_size")
    if by_dim:
        figures["sweep/reconstructions_by_dim.png"] = comparison_figure(
            [(label(t, "D", "embedding_dim"), recon(t)) for t in by_dim], originals,
            f"Reconstructions across embedding dims D (codebook size K = {k}); same {len(originals)} validation images")
    d, by_size = comparison_trials(trials, vary="codebook_size", fixed="embedding_dim")
    if by_size:
        figures["sweep/reconstructions_by_size.png"] = comparison_figure(
            [(label(t, "K", "codebook_size"), recon(t)) for t in by_size], originals,
            f"Reconstructions across codebook sizes K (embedding dim D = {d}); same {len(originals)} validation images")
    return figures


def summarise(study: optuna.Study, data: PreparedData, parent_run_id: str) -> SweepResult:
    """In the active parent run: results table and figures, best trial, registered best model."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    mlflow.log_metrics({f"n_{s.name.lower()}": counts.get(s.name, 0) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)})
    for t in trials:
        if t.value is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            mlflow.log_metric("trial_val_mse", t.value, step=t.number)
    rows = results_rows(trials)
    mlflow.log_text(results_csv(rows), "sweep/results.csv")
    tag = " (synthetic data)" if data.synthetic else ""
    tracking.log_figure(table_figure(rows, f"Sweep {study.study_name}: validation metrics per trial{tag}"), "sweep/metrics_table.png")
    tracking.log_figure(mse_figure(trials, f"Sweep {study.study_name}: validation MSE{tag}"), "sweep/mse_by_size.png")
    if not counts.get("COMPLETE"):
        raise UserError(f"sweep {study.study_name}", f"no trial completed ({dict(counts)}); see sweep/logs in MLflow run {parent_run_id}")

    best = study.best_trial
    best_run = best.user_attrs["mlflow_run_id"]
    mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
    mlflow.log_metrics({"best_val_mse": best.value, **{f"best_{k}": v for k, v in best.user_attrs.items() if k.startswith("val_")}})
    mlflow.set_tags({"best_trial_run_id": best_run, "best_trial_number": str(best.number), "best_trial": describe(best.params)})

    originals, _ = data.subset("val", A6_IMAGES)
    for path, fig in a6_figures(trials, originals).items():
        tracking.log_figure(fig, path)

    # register the model the best trial's run already logged (its run keeps the metrics and reconstructions)
    mv = mlflow.register_model(best.user_attrs["model_uri"], vqvae_stage.MODEL_NAME)
    client = mlflow.MlflowClient()
    for key, value in {"sweep_study": study.study_name, "sweep_parent_run_id": parent_run_id, "sweep_trial": str(best.number)}.items():
        client.set_model_version_tag(vqvae_stage.MODEL_NAME, mv.version, key, value)
    vqvae_stage.promote(vqvae_stage.MODEL_NAME, str(mv.version), "final_val_mse", best.value, higher_is_better=False)
    model_uri = f"models:/{vqvae_stage.MODEL_NAME}/{mv.version}"
    mlflow.set_tag("registered_model", f"{vqvae_stage.MODEL_NAME}/{mv.version}")
    return SweepResult(parent_run_id, study.study_name, dict(best.params), float(best.value), model_uri, str(mv.version), best_run, dict(counts))


# ----------------------------------------------------------------------------------------------------------
# Prefect task and the worker entry point


@task(name="sweep", cache_policy=NO_CACHE)
def sweep_task(
    data_dir: str, trials: int, workers: int, storage: str | None = None, preset_name: str = "demo",
    epochs: int | None = None, limit: int | None = None, seed: int = 0, overrides: dict | None = None,
) -> dict:
    """Run an Optuna sweep (never cached: a sweep runs when asked); returns the SweepResult as a dict.

    ``overrides`` fix VQ-VAE settings for every trial; the searched sizes are derived around them.
    """
    result = run_sweep(data_dir, trials, workers, storage, preset_name, epochs, limit, seed, overrides=overrides)
    # run_id / metrics: the keys the pipeline summary reads
    return {**asdict(result), "run_id": result.parent_run_id, "metrics": {"best_val_mse": result.best_value}}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tasks.sweep worker --study NAME --data DIR``: take a study's queued trials until none is left."""
    parser = argparse.ArgumentParser(prog="python -m tasks.sweep", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run queued trials of a study")
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument("--data", required=True, help="prepared data folder")
    worker.add_argument("--storage", default=None, help=f"RDB URL (default ${STORAGE_ENV}, else {DEFAULT_STORAGE})")
    worker.add_argument("--trials", type=int, default=None, help="at most this many trials (default: until the queue is empty)")
    worker.add_argument("--worker-index", type=int, default=0, help="offsets the sampler seed")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()  # our own handler: imported libraries may have configured the root logger
    handler.setFormatter(logging.Formatter(f"%(asctime)s worker-{args.worker_index} %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # terminated (e.g. the sweep was interrupted): unwind, so the trial is told FAIL and its run ends FAILED
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        run_worker(args.study, args.storage or os.environ.get(STORAGE_ENV), args.data, args.trials, worker_index=args.worker_index)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
