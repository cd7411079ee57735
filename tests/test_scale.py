"""Scaled out for real: PostgreSQL under Optuna, MLflow (a tracking server serving the artifacts) and Prefect,
started by ``scripts/stack.sh up --postgres``; sweep workers each in a folder of their own, as on separate machines.

One cluster and one tracking server for the session (`--dist loadfile` runs this module on one xdist worker),
stopped after; the Prefect server and its workers start in the background beside the sweep tests. The outage
test, which stops PostgreSQL under all of them, runs last (pytest keeps the file's order).
Skipped, with the reason, where PostgreSQL's server binaries are absent.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from model.data import load_prepared
from model.errors import UserError
from tasks.registry import load_vqvae
from tasks.sweep import run_sweep
from tasks.sweep_space import SweepConfig, SweepSpace
from tasks.sweep_study import STORAGE_ENV, create_study
from tasks.sweep_trial import EXPERIMENT, HANG_ENV, run_worker
from tests.conftest import TINY_VQVAE, forget_mlflow_store, isolate, make_galaxy10, make_tiny_data, use_store

ROOT = Path(__file__).resolve().parents[1]
GALAXY = str(Path(sys.executable).with_name("galaxy"))
FIXED = {k: v for k, v in TINY_VQVAE.items() if k not in ("codebook_size", "embedding_dim")}
TINY_SPACE = SweepSpace(codebook_sizes=(16, 32), embedding_dims=(4, 8), cosine_sim=(False,))
FAST_BEAT = {"heartbeat_interval": 1, "grace_period": 3, "max_retry": 2}  # a dead worker's trial is stale after 3 s
FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # a throwaway cluster


def postgres_binaries() -> bool:
    return shutil.which("initdb") is not None or bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """A running ``stack.sh up --postgres`` in a temporary folder."""

    dir: Path
    env: dict[str, str]  # what stack.sh runs with (its folder and ports)
    prefect: subprocess.Popen | None = None  # `up --only prefect,workers`, started beside the first tests

    def start_prefect(self) -> None:
        """The Prefect server on PostgreSQL (its migrations take most of ~30 s), the deployments and two workers,
        started in the background: only the flow test needs them, and the sweep tests before it mostly wait."""
        args = ["scripts/stack.sh", "up", "--postgres", "--only", "prefect,workers", "--workers", "2"]
        with open(self.dir / "prefect-up.log", "wb") as log:  # the process writes through its own copy
            self.prefect = subprocess.Popen(["bash", *args], cwd=ROOT, env=self.env, stdout=log, stderr=log)

    def prefect_ready(self, timeout: float = 300) -> None:
        assert self.prefect is not None, "start_prefect() first"
        returncode = self.prefect.wait(timeout=timeout)
        assert returncode == 0, f"stack.sh up (prefect) failed: {(self.dir / 'prefect-up.log').read_text()[-3000:]}"

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{args} failed: {proc.stderr[-3000:]}"
        return proc

    def urls(self) -> dict[str, str]:
        """The URLs a worker needs, from the stack's env file."""
        lines = (self.dir / "env").read_text().splitlines()
        return dict(line.removeprefix("export ").split("=", 1) for line in lines)

    @property
    def storage(self) -> str:
        return self.urls()["GALAXY_SWEEP_STORAGE"]

    @property
    def tracking(self) -> str:
        return self.urls()["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="session")
def stack():
    """PostgreSQL (databases prefect, mlflow, optuna) and an MLflow tracking server on it, for the session."""
    if not postgres_binaries():
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed (Debian: postgresql-15)")
    state = Path(tempfile.mkdtemp(prefix="galaxy-stack-"))
    state.chmod(0o755)  # the cluster runs as `postgres` when the tests run as root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GALAXY_", "MLFLOW_", "PREFECT_API"))}
    env.update(
        GALAXY_STACK_DIR=str(state),
        GALAXY_PG_OPTIONS=FAST_PG,
        PREFECT_PORT=str(free_port()),
        MLFLOW_PORT=str(free_port()),
        DASHBOARD_PORT=str(free_port()),
        PREFECT_WORKER_QUERY_SECONDS="1",
        OMP_NUM_THREADS="1",
        GALAXY_REAL="",
        GALAXY_PROGRESS="0",
    )
    running = Stack(state, env)
    try:
        running.script("scripts/stack.sh", "up", "--postgres", "--only", "mlflow")
        running.start_prefect()
        yield running
    finally:
        if running.prefect is not None and running.prefect.poll() is None:
            running.prefect.kill()
            running.prefect.wait()
        subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def wait_until(condition, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def study_trials(storage, name: str) -> list:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def killed_sweep(stack, tmp_path_factory):
    """Trial 0 of study 'scale' (N = 3) is SIGKILLed mid-trial in a lone worker; after the heartbeat's grace
    period ``run_sweep`` runs 3 workers, each in its own folder, on the same study to the end."""
    n = 3
    user = tmp_path_factory.mktemp("user")  # the user's folder: the parent process works here
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, tmp_path_factory.mktemp("home"), user)
        use_store(stack.tracking, mp)
        data = make_tiny_data(tmp_path_factory.mktemp("data"))
        config = SweepConfig(epochs=1, overrides=FIXED, space=TINY_SPACE, data_key=load_prepared(data).key, n_trials=n)
        create_study(stack.storage, "scale", config.to_dict(), startup_trials=2, **FAST_BEAT)

        # the doomed worker: a machine of its own (its folder, its copy of the data), stopped inside trial 0
        machine = tmp_path_factory.mktemp("doomed")
        shutil.copytree(data, machine / "data")
        env = {**os.environ, STORAGE_ENV: stack.storage, HANG_ENV: "0"}
        cmd = [GALAXY, "sweep-worker", "--study", "scale", "--data", str(machine / "data")]
        with open(machine / "worker.log", "wb") as log:
            doomed = subprocess.Popen(cmd, cwd=machine, env=env, stdout=log, stderr=subprocess.STDOUT)
        storage = optuna.storages.RDBStorage(stack.storage)
        try:

            def trial_0_started():  # epoch 1 ended inside the trial: its MLflow run exists
                trials = study_trials(storage, "scale")
                return trials and trials[0].user_attrs.get("mlflow_run_id") and trials[0]

            killed = wait_until(trial_0_started, 120, "trial 0 to reach the end of its first epoch")
            assert killed.state == TrialState.RUNNING and doomed.poll() is None
            os.kill(doomed.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            doomed.kill()
            doomed.wait()
            storage.engine.dispose()
        # the retry starts with the next trial after the grace period: wait that out, so the test is deterministic
        time.sleep(max(0.0, killed_at + FAST_BEAT["grace_period"] + 1.5 - time.monotonic()))
        result = run_sweep(data, n, 3, stack.storage, study_name="scale", space=TINY_SPACE, overrides=FIXED, epochs=1)
        retried_at = time.monotonic()
        forget_mlflow_store()
    return dict(n=n, result=result, user=user, killed=killed, killed_at=killed_at, retried_at=retried_at)


def test_three_workers_in_their_own_folders_sweep_on_postgres(stack, killed_sweep, monkeypatch):
    use_store(stack.tracking, monkeypatch)
    n, result, user = killed_sweep["n"], killed_sweep["result"], killed_sweep["user"]
    trials = study_trials(stack.storage, "scale")
    states = Counter(t.state for t in trials)
    assert n <= states[TrialState.COMPLETE] + states[TrialState.PRUNED] <= n + 2, states  # N..N+W-1
    assert states[TrialState.RUNNING] == 0 and states[TrialState.FAIL] == 1, states  # only the killed trial failed
    assert result.counts == {s.name: k for s, k in states.items()}

    # three workers ran, each in its own folder (a trial's run folder is made there and removed once the trial is
    # logged), and left no file there: artifacts went through the tracking server
    sweep_dir = user / "runs" / "sweep-scale"
    workers = sorted(sweep_dir.glob("worker-*/"))
    assert [w.name for w in workers] == ["worker-0", "worker-1", "worker-2"]
    ran = [w for w in workers if "trial " in (sweep_dir / f"{w.name}.log").read_text()]
    assert ran and all((w / "runs" / "sweep-scale").is_dir() for w in ran), [list(w.rglob("*")) for w in workers]
    assert not [p for w in workers for p in w.rglob("*") if p.is_file()]

    # one MLflow run per trial in the tracking server, nested under the sweep's parent (the killed one ran before)
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string="tags.sweep_study = 'scale'", output_format="list"
    )
    assert sorted(int(r.data.tags["sweep_trial"]) for r in runs) == [t.number for t in trials]
    nested = [r for r in runs if r.data.tags["sweep_trial"] != "0"]
    assert {r.data.tags.get("mlflow.parentRunId") for r in nested} == {result.parent_run_id}
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    assert {int(r.data.tags["sweep_trial"]): r.info.status for r in runs} == {
        t.number: status[t.state.name] for t in trials
    }
    assert mlflow.get_run(result.parent_run_id).info.status == "FINISHED"
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in runs)  # served by the server
    assert not (user / "mlflow").exists() and not (user / "mlruns").exists()

    # the best trial registered in the server's registry, loaded by its alias from this (a third) folder
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert result.best_value == best.value and result.best_run_id == best.user_attrs["mlflow_run_id"]
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("galaxy-vqvae", "champion")
    assert version.run_id == result.best_run_id
    vqvae, _ = load_vqvae("models:/galaxy-vqvae@champion")
    assert (vqvae.config.codebook_size, vqvae.config.embedding_dim) == (
        best.params["codebook_size"],
        best.params["embedding_dim"],
    )


def test_sigkilled_worker_trial_is_failed_retried_and_its_run_ended(stack, killed_sweep, monkeypatch):
    use_store(stack.tracking, monkeypatch)
    trials = study_trials(stack.storage, "scale")
    assert trials[0].state == TrialState.FAIL  # failed by the heartbeat...
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 0]  # ...and retried once, same parameters
    assert retry.params == trials[0].params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    killed_run = mlflow.get_run(killed_sweep["killed"].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED" and killed_run.data.tags["optuna_state"] == "FAIL"
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string="tags.sweep_study = 'scale'", output_format="list"
    )
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]


def test_two_flow_runs_at_once_on_two_workers_of_a_prefect_server_on_postgres(stack, tmp_path, monkeypatch):
    """galaxy/full twice at once: one trains a VQ-VAE, the other sweeps (the sweep stage through the flow, with
    its Optuna study on the stack's PostgreSQL); each worker runs one in its own folder."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack.prefect_ready()
    api = stack.urls()["PREFECT_API_URL"]
    source = make_galaxy10(tmp_path / "src.h5", n=120, side=64)
    vqvae = {**TINY_VQVAE, "widths": list(TINY_VQVAE["widths"])}
    common = dict(source=f"h5:{source}", size=32, vqvae_epochs=1, vqvae_overrides=vqvae)
    train = dict(common, seed=0, stages=["data", "vqvae"])
    sweep = dict(common, seed=1, stages=["data", "sweep"], sweep_trials=1, sweep_workers=1)

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:

        def both_online():
            workers = client.read_workers_for_work_pool("galaxy-process")
            return len([w for w in workers if str(w.status).endswith("ONLINE")]) == 2

        wait_until(both_online, 120, "two workers to poll the pool", every=0.5)
        runs = [run_deployment("galaxy/full", parameters={"config": c}, timeout=0) for c in (train, sweep)]

        def finished():
            states = [client.read_flow_run(run.id).state for run in runs]
            return all(state.is_final() for state in states) and states

        states = wait_until(finished, 300, "both flow runs to finish", every=1)
    assert [s.type.value for s in states] == ["COMPLETED", "COMPLETED"], [s.message for s in states]

    # each worker ran one, in its own folder: the prepared data and run folders are there, not in the checkout
    folders = [stack.dir / "workers" / f"worker-{i}" for i in range(2)]
    assert all((f / "data" / "prepared").is_dir() for f in folders), [list(f.iterdir()) for f in folders]

    # the sweep's study is on PostgreSQL: exactly 1 finished trial (one sweep worker), none left running
    studies = optuna.get_all_study_summaries(storage=stack.storage)
    swept = [s for s in studies if s.study_name.startswith("sweep-")]  # the flow names its study
    assert len(swept) == 1, [s.study_name for s in studies]
    states = Counter(t.state for t in study_trials(stack.storage, swept[0].study_name))
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 1 and set(states) <= {
        TrialState.COMPLETE,
        TrialState.PRUNED,
    }, states

    # the models are in the tracking server, and load from a third folder by alias and by version
    use_store(stack.tracking, monkeypatch)
    client = mlflow.MlflowClient()
    sweeps = client.get_experiment_by_name(EXPERIMENT).experiment_id
    [parent] = client.search_runs([sweeps], f"tags.study = '{swept[0].study_name}'")
    assert parent.info.status == "FINISHED" and "best_val_mse" in parent.data.metrics
    versions = client.search_model_versions("name='galaxy-vqvae'")
    by_run = {client.get_run(v.run_id).info.experiment_id: v for v in versions}
    trained = by_run[client.get_experiment_by_name("galaxy-vqvae").experiment_id]
    swept_best = by_run[client.get_experiment_by_name(EXPERIMENT).experiment_id]
    for v in (trained, swept_best):
        vqvae, _ = load_vqvae(f"models:/galaxy-vqvae/{v.version}")
        assert vqvae.config.image_size == 32
    vqvae, _ = load_vqvae("models:/galaxy-vqvae@champion")
    assert vqvae.config.image_size == 32


def test_postgres_stopped_mid_sweep_fails_in_one_line_and_a_rerun_carries_on(stack, mlflow_store, tiny_data):
    """MLflow on a local store here: the database under the study goes away, the run that records it does not."""
    n = 3
    stopped: dict = {}

    storage = optuna.storages.RDBStorage(stack.storage)  # the schema made here, not by two threads at once

    def outage():  # as soon as trial 0 is done: freeze the worker, stop PostgreSQL, let the worker go on
        try:

            def running_after_a_finished_one():
                try:
                    trials = optuna.load_study(study_name="outage", storage=storage).get_trials(deepcopy=False)
                except KeyError:  # not created yet
                    return None
                done = [t for t in trials if t.state == TrialState.COMPLETE]
                now = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
                return done and now and (done, now[0])

            done, running = wait_until(running_after_a_finished_one, 120, "a trial after a finished one", 0.1)
            pid = int(running.user_attrs["worker"].rsplit(":", 1)[1])
            storage.engine.dispose()
            os.kill(pid, signal.SIGSTOP)
            try:
                stack.script("scripts/pg.sh", "stop", str(stack.dir / "pg"))
            finally:
                os.kill(pid, signal.SIGCONT)
            stopped.update(at=time.monotonic(), done=[t.number for t in done])
        except BaseException as err:  # noqa: B036 - reported by the test below
            stopped["error"] = err

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    try:
        with pytest.raises(UserError) as caught:
            run_sweep(
                tiny_data,
                n,
                1,
                stack.storage,
                study_name="outage",
                space=TINY_SPACE,
                overrides=FIXED,
                epochs=2,
                heartbeat=FAST_BEAT,
            )
        failed_at = time.monotonic()
        thread.join(timeout=60)
        assert "error" not in stopped, stopped.get("error")
        message = str(caught.value)
        assert "\n" not in message and message.startswith("sweep storage postgresql://galaxy:***@127.0.0.1:"), message
        assert "unreachable" in message and "--study outage" in message, message
        assert failed_at - stopped["at"] < 60, "not a hang"
        # the failure is recorded: the sweep's run FAILED, no trial's run left RUNNING, the worker's one line
        client = mlflow.MlflowClient()
        (parent,) = client.search_runs(
            [client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.study = 'outage'"
        )
        assert parent.info.status == "FAILED"
        assert not [r for r in client.search_runs([parent.info.experiment_id]) if r.info.status == "RUNNING"]
        log = (mlflow_store / "runs" / "sweep-outage" / "worker-0.log").read_text()
        assert log.strip().splitlines()[-1].startswith("error: sweep storage postgresql://galaxy:***@"), log[-2000:]
    finally:
        stack.script("scripts/pg.sh", "start", str(stack.dir / "pg"))

    # a worker run again carries on (as `galaxy sweep --study outage` would, without its report): the trials finished
    # before the outage stay, the one cut off is failed by the heartbeat and retried, the study reaches N. Its last
    # beat came before the outage; a worker fails it only once the grace period has passed since (on a fast machine
    # the rerun can start within it, finish the study first and leave the trial RUNNING)
    time.sleep(max(0.0, stopped["at"] + FAST_BEAT["grace_period"] + 1.0 - time.monotonic()))
    run_worker("outage", stack.storage, tiny_data)
    trials = study_trials(stack.storage, "outage")
    assert all(trials[k].state == TrialState.COMPLETE for k in stopped["done"])
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == n and states[TrialState.RUNNING] == 0, states
    client = mlflow.MlflowClient()
    assert not [r for r in client.search_runs([parent.info.experiment_id]) if r.info.status == "RUNNING"]
