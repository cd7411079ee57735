"""Benchmark a sweep scaled out on PostgreSQL: trials per minute with 1 vs 3 worker processes, and the time from a
worker's SIGKILL to its trial being retried.

It starts its own stack in a temporary folder (``scripts/stack.sh up --postgres --only mlflow``: a PostgreSQL
cluster and an MLflow tracking server on it serving the artifacts), so the trials log and register exactly as a
scaled-out sweep does; each worker runs in a folder of its own. Trials are small on purpose (a 32 px VQ-VAE,
1 epoch on 160 synthetic images), so the figures measure the sweep's machinery (workers, storage, tracking
server) rather than the model. ``GALAXY_BENCH_TRIALS`` (default 12) trials per sweep.

Trials per minute: finished trials over the span from the first trial's start to the last one's end (the worker
processes' start-up excluded), and over the whole ``run_sweep`` call (start-up, parent run and report included).
Kill to retry: 3 workers; the worker that takes trial 1 stops inside it (``GALAXY_SWEEP_HANG_IN_TRIAL``) and is
SIGKILLed; the study's heartbeat is 1 s with a 5 s grace period here (the project's default: 60 s and 180 s), so
the retry comes once the grace period has passed and another worker starts a trial.

Runs with no arguments on a CPU in a few minutes; the last line reads ``sweep: <ratio>x ...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_TRIALS = int(os.environ.get("GALAXY_BENCH_TRIALS", 12))
BEAT = {"heartbeat_interval": 1, "grace_period": 5, "max_retry": 2}
SMALL = dict(image_size=32, widths=(8, 16), batch_size=16)  # every trial: a 32 px VQ-VAE, one epoch
FAST_PG = "-c fsync=off -c synchronous_commit=off"  # a throwaway cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack(state: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GALAXY_", "MLFLOW_TRACKING"))}
    env.update(GALAXY_STACK_DIR=str(state), MLFLOW_PORT=os.environ["BENCH_MLFLOW_PORT"], GALAXY_PG_OPTIONS=FAST_PG)
    subprocess.run(["bash", "scripts/stack.sh", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def urls(state: Path) -> dict[str, str]:
    lines = (state / "env").read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def rate(study) -> tuple[int, float]:
    """(finished trials, trials per minute from the first start to the last end)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in study.get_trials(deepcopy=False))
    return len(done), 60 * len(done) / span.total_seconds()


def sweep(data: Path, storage: str, name: str, workers: int) -> dict[str, float]:
    import optuna

    from tasks.sweep import run_sweep
    from tasks.sweep_space import SweepSpace

    space = SweepSpace(codebook_sizes=(16, 32), embedding_dims=(4, 8), cosine_sim=(False,))
    t0 = time.perf_counter()
    run_sweep(data, N_TRIALS, workers, storage, study_name=name, space=space, overrides=SMALL, epochs=1, heartbeat=BEAT)
    wall = time.perf_counter() - t0
    done, per_min = rate(optuna.load_study(study_name=name, storage=storage))
    return {"done": done, "per_min": per_min, "wall": wall, "end_to_end": 60 * done / wall}


def kill_to_retry(data: Path, storage: str) -> float:
    """Seconds from the SIGKILL of trial 1's worker to the start of its retry."""
    import optuna

    from model.errors import UserError
    from tasks.sweep_trial import HANG_ENV

    seen: dict = {}

    def killer() -> None:
        rdb = optuna.storages.RDBStorage(storage)
        while "retry" not in seen:
            try:
                trials = optuna.load_study(study_name="kill", storage=rdb).get_trials(deepcopy=False)
            except KeyError:  # not created yet
                trials = []
            hung = [t for t in trials if t.number == 1 and t.user_attrs.get("mlflow_run_id")]
            if hung and "killed" not in seen:
                os.kill(int(hung[0].user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                seen["killed"] = time.time()
            retry = [t for t in trials if t.user_attrs.get("retry_of") == 1]
            if retry:
                seen["retry"] = retry[0].datetime_start.timestamp()
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    os.environ[HANG_ENV] = "1"
    try:
        sweep(data, storage, "kill", 3)
    except UserError as err:  # the killed worker's exit fails the sweep, as it should; its trials are done
        if "exited -9" not in str(err):
            raise
    finally:
        del os.environ[HANG_ENV]
    thread.join(timeout=30)
    if "retry" not in seen:
        raise SystemExit("sweep: trial 1 was not retried before the sweep ended (raise GALAXY_BENCH_TRIALS)")
    return seen["retry"] - seen["killed"]


def main() -> None:
    from model.data import prepare
    from tasks.data import synth_file

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["GALAXY_PROGRESS"] = "0"
    os.environ["BENCH_MLFLOW_PORT"] = str(free_port())
    state = Path(tempfile.mkdtemp(prefix="galaxy-bench-stack-"))
    state.chmod(0o755)  # as root the cluster runs as `postgres`, which must reach its folder
    work = Path(tempfile.mkdtemp(prefix="galaxy-bench-sweep-"))
    os.chdir(work)
    try:
        t0 = time.perf_counter()
        stack(state, "up", "--postgres", "--only", "mlflow")
        print(f"stack up (PostgreSQL + MLflow tracking server): {time.perf_counter() - t0:.0f} s", flush=True)
        u = urls(state)
        os.environ["MLFLOW_TRACKING_URI"] = u["MLFLOW_TRACKING_URI"]
        data = prepare(synth_file(200, 64, 0, out=work / "src.h5", workers=1), work / "prepared", size=32).out
        one = sweep(data, u["GALAXY_SWEEP_STORAGE"], "w1", 1)
        print(
            f"1 worker:  {one['done']} trials, {one['per_min']:.1f} trials/min (first start to last end), "
            f"{one['end_to_end']:.1f} trials/min end to end ({one['wall']:.0f} s)",
            flush=True,
        )
        three = sweep(data, u["GALAXY_SWEEP_STORAGE"], "w3", 3)
        print(
            f"3 workers: {three['done']} trials, {three['per_min']:.1f} trials/min (first start to last end), "
            f"{three['end_to_end']:.1f} trials/min end to end ({three['wall']:.0f} s)",
            flush=True,
        )
        retry_s = kill_to_retry(data, u["GALAXY_SWEEP_STORAGE"])
        print(
            f"kill to retry: {retry_s:.1f} s (heartbeat {BEAT['heartbeat_interval']} s, grace "
            f"{BEAT['grace_period']} s)",
            flush=True,
        )
        print(
            f"sweep: {three['per_min'] / one['per_min']:.2f}x trials/min with 3 workers vs 1 on PostgreSQL "
            f"({three['per_min']:.1f} vs {one['per_min']:.1f} trials/min; end to end {three['end_to_end']:.1f} vs "
            f"{one['end_to_end']:.1f}; {os.cpu_count()} CPU cores); SIGKILL to retry {retry_s:.1f} s with a "
            f"{BEAT['grace_period']} s grace period"
        )
    finally:
        stack(state, "down")
        os.chdir(ROOT)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
