"""The Optuna study of a sweep: its storage, its one-time creation and how a worker loads it.

Storage: any SQLAlchemy URL (``sqlite:///mlflow/optuna.db`` by default; PostgreSQL when machines share a
study). The study is created ONCE, before any worker starts: several processes creating a fresh SQLite study
race on its schema (``UNIQUE constraint failed: alembic_version.version_num``) and lose trials.

Workers open the storage with Optuna's heartbeat (``heartbeat_interval``, ``grace_period``): a trial whose
worker died stops beating, and the next worker to start a trial after the grace period marks it FAIL and
``RetryHeartbeatStaleTrialCallback`` (Optuna 5's name for ``RetryFailedTrialCallback``, which is deprecated)
queues a copy with the same parameters, which a worker then runs.

SQLite gets a long busy timeout and ``BEGIN IMMEDIATE`` transactions. pysqlite otherwise opens a transaction
only at the first write, after the read that checked a trial's state, and SQLite ignores ``SELECT ... FOR
UPDATE``: two workers could both take one queued (retried) trial, or both fail one stale trial and queue two
retries. PostgreSQL and MySQL lock the row.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from model.errors import UserError

DEFAULT_STORAGE = "sqlite:///mlflow/optuna.db"
STORAGE_ENV = "GALAXY_SWEEP_STORAGE"  # how run_sweep hands the storage URL to its workers (not on argv: passwords)
SQLITE_TIMEOUT_S = 120.0  # how long a SQLite connection waits for the write lock before failing
SETTINGS_ATTR = "sweep_settings"  # study user attr written once by create_study: sampler, pruner, heartbeat
CONFIG_ATTR = "sweep_config"  # study user attr written by create_study: the SweepConfig every worker uses
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count towards N


def storage_url(storage: str | None) -> str:
    """The storage URL (argument, else $GALAXY_SWEEP_STORAGE, else the default), a SQLite file's folder created."""
    url = storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        example = "e.g. sqlite:///mlflow/optuna.db or postgresql://..."
        raise UserError("storage", f"{url!r} is not a database URL ({example})") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError("storage", "an in-memory SQLite database cannot be shared by worker processes; give a file")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def masked(url: str) -> str:
    """The URL with any password hidden (for params, tags and messages)."""
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def connection_failure(err: BaseException | None) -> str | None:
    """The first line of the database-connection failure behind ``err`` (a server down, a refused or dropped
    connection), else None. Optuna wraps some of them in StorageInternalError; its cause is looked at."""
    while err is not None:
        if isinstance(err, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            text = str(getattr(err, "orig", None) or err).strip().splitlines()
            return text[0][:300] if text else type(err).__name__
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def storage_errors(url: str, study_name: str) -> Iterator[None]:
    """A lost connection to the study's database, inside the block, becomes one line that says how to carry on."""
    try:
        yield
    except Exception as err:
        reason = connection_failure(err)
        if reason is None:
            raise
        raise UserError(
            f"sweep storage {masked(url)}",
            f"unreachable ({reason}); start the database and rerun with --study {study_name} to carry on",
        ) from None


def _serialise_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Open every SQLite transaction with BEGIN IMMEDIATE (the write lock first), so read-check-write is atomic."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not BEGIN by itself (it would, late)

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage initialised lack the listeners


def open_rdb(storage: str | None, heartbeat: dict[str, Any] | None = None) -> RDBStorage:
    """An Optuna RDB storage that several processes can share; with ``heartbeat`` (the study's settings) its
    running trials beat, and a stale one is failed and retried."""
    url = storage_url(storage)
    sqlite = sqlalchemy.engine.make_url(url).get_backend_name() == "sqlite"
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    beat: dict[str, Any] = {}
    if heartbeat:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=int(heartbeat["max_retry"]))
        beat = dict(
            heartbeat_interval=int(heartbeat["heartbeat_interval"]),
            grace_period=int(heartbeat["grace_period"]),
            heartbeat_stale_trial_callback=retry,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    if sqlite:
        _serialise_sqlite(rdb.engine)
    return rdb


def create_study(
    storage: str | None,
    study_name: str,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    startup_trials: int = 4,
    warmup_epochs: int = 1,
    heartbeat_interval: int = 60,
    grace_period: int = 180,
    max_retry: int = 2,
) -> optuna.Study:
    """Create the study once, before any worker starts (or load it when it exists), and store ``config``.

    One objective, minimised: validation reconstruction MSE. The settings are stored in the study on its
    creation, so that every worker builds the same ones (``load_sweep_study``): a seeded TPE sampler whose first
    ``startup_trials`` trials are random, a median pruner that waits for ``startup_trials`` finished trials and
    prunes from epoch ``warmup_epochs`` on, and the heartbeat (seconds) with at most ``max_retry`` retries.
    ``config`` (a ``SweepConfig.to_dict()``) replaces the stored one on every call.
    """
    if min(startup_trials, warmup_epochs, max_retry) < 0 or min(heartbeat_interval, grace_period) < 1:
        raise UserError("sweep", "startup_trials, warmup_epochs and max_retry must be >= 0, the heartbeat >= 1 s")
    rdb = open_rdb(storage)
    study = optuna.create_study(storage=rdb, study_name=study_name, direction="minimize", load_if_exists=True)
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(
            SETTINGS_ATTR,
            {
                "seed": int(seed),
                "startup_trials": int(startup_trials),
                "warmup_epochs": int(warmup_epochs),
                "heartbeat_interval": int(heartbeat_interval),
                "grace_period": int(grace_period),
                "max_retry": int(max_retry),
            },
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_mse"])
    if config is not None:
        study.set_user_attr(CONFIG_ATTR, config)
    return study


def load_sweep_study(storage: str | None, study_name: str, worker_index: int = 0) -> tuple[optuna.Study, RDBStorage]:
    """The study with heartbeat storage, this worker's sampler (seed + worker index: workers must not draw the
    same random trials) and the median pruner; and that storage (``first_beat`` needs it)."""
    try:
        attrs = optuna.load_study(study_name=study_name, storage=open_rdb(storage)).user_attrs
    except KeyError:
        where = masked(storage_url(storage))
        raise UserError("study", f"{study_name!r} not found in {where}; create it first (galaxy sweep)") from None
    if SETTINGS_ATTR not in attrs:
        raise UserError("study", f"{study_name!r} was not created by galaxy sweep (it has no {SETTINGS_ATTR})")
    settings = attrs[SETTINGS_ATTR]
    startup = int(settings["startup_trials"])
    sampler = optuna.samplers.TPESampler(
        seed=int(settings["seed"]) + worker_index, n_startup_trials=startup, constant_liar=True
    )
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=int(settings["warmup_epochs"]))
    rdb = open_rdb(storage, heartbeat=settings)
    return optuna.load_study(study_name=study_name, storage=rdb, sampler=sampler, pruner=pruner), rdb


def first_beat(storage: RDBStorage, study_name: str, trial_number: int) -> None:
    """Record a trial's heartbeat now, before the trial is marked as a worker's. Optuna's heartbeat thread writes
    the first beat in the background, and a RUNNING trial without any beat is never failed as stale: a worker
    that died before that write (seen when PostgreSQL stopped just then) left its trial RUNNING for ever."""
    if storage.get_heartbeat_interval() is None:
        return
    study_id = storage.get_study_id_from_name(study_name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial_number))


def count(study: optuna.Study, states: tuple[TrialState, ...] = FINISHED) -> int:
    """How many of the study's trials are in ``states`` (by default: those that count towards N)."""
    return len(study.get_trials(deepcopy=False, states=states))
