"""Optuna sweeps over codebook size, embedding dim and quantizer options (SPEC O3), with the A6 comparison.

How a sweep runs (``run_sweep``):

1. The parent MLflow run starts (experiment ``galaxy-sweep``) and the study is created ONCE, before any
   worker starts, with the SweepConfig every worker reads (``tasks.sweep_study``).
2. W worker processes (``galaxy sweep-worker``, each in a folder of its own as if on another machine; more may
   join from other machines on a shared RDB storage) each run ``study.optimize`` with ``MaxTrialsCallback(N)``
   counting COMPLETE and PRUNED trials (``tasks.sweep_trial``). The callback runs as each trial ends, so the
   trials still running when the count reaches N also finish: a sweep ends with N to N + W - 1 finished trials.
3. A trial is a child MLflow run of the parent; a worker that dies mid-trial is covered by the heartbeat (its
   trial is failed and retried after the grace period) and, once this machine's workers have all exited,
   by the parent: their trials still RUNNING become FAIL and the MLflow runs of failed trials end FAILED.
4. Any worker that exited non-zero fails the sweep with one line and its log's tail (a lost study database, with
   a line saying so); ``--study NAME`` runs the same sweep again, carrying on from the trials that finished.
   Otherwise the parent run gets the results table, the A6 figures and the best trial, registered as
   ``galaxy-vqvae`` (``tasks.sweep_report``).

Names: K codebook size, D embedding dim, N trials, W workers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
import optuna
from optuna.trial import TrialState
from prefect import task
from prefect.cache_policies import NO_CACHE

from model.config import from_preset
from model.data import load_prepared
from model.errors import UserError
from model.utils import pick_device
from model.vqvae import PRESETS
from tasks import tracking
from tasks.runs import runs_dir
from tasks.sweep_report import SweepResult, summarise
from tasks.sweep_space import SweepConfig, SweepSpace
from tasks.sweep_study import STORAGE_ENV, create_study, masked, storage_errors, storage_url
from tasks.sweep_trial import EXPERIMENT, end_stale_runs, safe_name, worker_id

WORKER_COMMAND = [sys.executable, "-m", "cli.main", "sweep-worker"]  # `galaxy sweep-worker` of this interpreter


class Worker(NamedTuple):
    index: int
    pid: int
    returncode: int
    log: Path


def absolute_sqlite(url: str) -> str:
    """A SQLite URL with a relative path made absolute (workers run in folders of their own); others unchanged."""
    prefix = "sqlite:///"
    path = url[len(prefix) :] if url.startswith(prefix) else ""
    if not path or path.startswith("/") or path == ":memory:":
        return url
    return prefix + str(Path(path).resolve())


def launch_workers(study_name: str, storage: str, data_dir: str | Path, workers: int, log_dir: Path) -> list[Worker]:
    """Run W ``galaxy sweep-worker`` processes on the study and wait for them all.

    Each runs in a folder of its own (``log_dir/worker-I``, its run folders under it), as on a machine of its
    own: the workers share only the storage URL, the MLflow tracking URI and the (read-only) data folder.
    """
    env = dict(os.environ)
    env[STORAGE_ENV] = absolute_sqlite(storage)
    env["MLFLOW_TRACKING_URI"] = absolute_sqlite(tracking.tracking_uri())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tracking.ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    env.setdefault("GALAXY_PROGRESS", "0")
    log_dir.mkdir(parents=True, exist_ok=True)
    data = str(Path(data_dir).resolve())
    procs = []
    for i in range(workers):
        path = log_dir / f"worker-{i}.log"
        home = (log_dir / f"worker-{i}").resolve()
        home.mkdir(exist_ok=True)
        cmd = [*WORKER_COMMAND, "--study", study_name, "--data", data, "--worker-index", str(i)]
        mine = {**env, "GALAXY_RUNS": str(home / "runs")}
        with open(path, "wb") as out:
            procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=mine, cwd=home), path))
    try:
        return [Worker(i, proc.pid, proc.wait(), path) for i, (proc, path) in enumerate(procs)]
    except BaseException:  # interrupted: stop the workers (they fail their trials), then re-raise
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def fail_abandoned(study: optuna.Study, workers: list[Worker]) -> int:
    """After this machine's workers exited: their trials still RUNNING become FAIL, and every RUNNING MLflow run
    of a failed trial ends FAILED. Trials of workers elsewhere are left to the heartbeat. Returns how many."""
    ours = {worker_id(w.pid) for w in workers}
    abandoned = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("worker") in ours
    ]
    for number in abandoned:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    end_stale_runs(study.study_name, {t.number: t.state for t in study.get_trials(deepcopy=False)})
    return len(abandoned)


def _tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log, joined on one line."""
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    text = [line.strip() for line in text if line.strip()]
    return " | ".join(line[:200] for line in text[-lines:]) or "(empty log)"


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
    heartbeat: dict[str, int] | None = None,
) -> SweepResult:
    """Run N trials on W worker processes sharing one study; register the best model and log the A6 figures.

    ``space`` defaults to K and D at 1/4..2x the preset's; ``overrides`` are fixed settings for every trial;
    ``startup_trials`` (random trials before TPE, finished trials before pruning) defaults to N // 3 in [2, 8];
    pruning starts at epoch ``warmup_epochs``; ``heartbeat`` overrides ``create_study``'s heartbeat_interval,
    grace_period and max_retry.
    """
    if n_trials < 1 or workers < 1:
        raise UserError("sweep", f"needs at least one trial and one worker, got trials={n_trials} workers={workers}")
    if study_name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", study_name):
        raise UserError("study", f"{study_name!r}: use letters, digits, '.', '_' and '-' only")
    tracking.setup()
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    from_preset(PRESETS, preset_name, **overrides)  # a bad preset or setting is a UserError before any trial
    try:
        space = space or SweepSpace.from_preset(preset_name, **overrides)
    except ValueError as err:
        raise UserError(f"preset {preset_name}", str(err)) from None
    url = storage_url(storage)
    study_name = study_name or f"sweep-{preset_name}-{data.key[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    startup = startup_trials if startup_trials is not None else max(2, min(8, n_trials // 3))
    workers = min(workers, n_trials)
    tags = tracking.base_tags(
        data.meta, pick_device(None).type, stage="sweep", preset=preset_name, study=study_name, storage=masked(url)
    )
    t0 = time.perf_counter()
    with tracking.run(EXPERIMENT, tracking.run_name(f"sweep-{preset_name}", data.meta), tags) as parent:
        parent_id = parent.info.run_id
        mlflow.log_params(
            tracking.flatten(
                {
                    "sweep": {
                        "trials": n_trials,
                        "workers": workers,
                        "seed": seed,
                        "study": study_name,
                        "storage": masked(url),
                        "startup_trials": startup,
                        "warmup_epochs": warmup_epochs,
                        "preset": preset_name,
                        "epochs": epochs,
                        "limit": limit,
                    },
                    "space": space.to_dict(),
                    "fixed": overrides,
                    "data": {"dir": str(data.root), "key": data.key},
                }
            )
        )
        config = SweepConfig(preset_name, epochs, limit, overrides, space, parent_id, data.key, n_trials)
        with storage_errors(url, study_name):
            study = create_study(
                url,
                study_name,
                config.to_dict(),
                seed,
                startup_trials=startup,
                warmup_epochs=warmup_epochs,
                **(heartbeat or {}),
            )
        log_dir = runs_dir() / f"sweep-{safe_name(study_name)}"
        outcomes = launch_workers(study_name, url, data.root, workers, log_dir)
        for w in outcomes:
            mlflow.log_artifact(str(w.log), artifact_path="sweep/logs")
        broken = [w for w in outcomes if w.returncode != 0]
        mlflow.set_tag("worker_failures", str(len(broken)))
        mlflow.log_metric("sweep_time_s", time.perf_counter() - t0)
        with storage_errors(url, study_name):  # the database gone mid-sweep: the cause, before the workers' exits
            mlflow.set_tag("abandoned_trials", str(fail_abandoned(study, outcomes)))
            if broken:
                w, again = broken[0], f"rerun with --study {study_name} to carry on"
                ends = f"{w.log} ends: {_tail(w.log)}"
                raise UserError(f"sweep worker {w.index}", f"exited {w.returncode}; {ends} ({again})")
            return summarise(study, data, parent_id)


@task(name="sweep", cache_policy=NO_CACHE)
def sweep_task(
    data_dir: str,
    trials: int,
    workers: int,
    storage: str | None = None,
    preset_name: str = "demo",
    epochs: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    overrides: dict | None = None,
) -> dict:
    """Run an Optuna sweep (never cached: a sweep runs when asked); returns the SweepResult as a dict.

    ``overrides`` fix VQ-VAE settings for every trial; the searched sizes are derived around them.
    """
    result = run_sweep(data_dir, trials, workers, storage, preset_name, epochs, limit, seed, overrides=overrides)
    # run_id / metrics: the keys the pipeline summary reads
    return {**asdict(result), "run_id": result.parent_run_id, "metrics": {"best_val_mse": result.best_value}}
