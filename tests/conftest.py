"""Shared fixtures: an isolated environment for every test, small Galaxy10-format files, Prefect and MLflow homes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

# Settings from the caller's shell must not reach the tests (nor the processes they start): Prefect and
# MLflow servers, GALAXY_* overrides. Per test, ``isolated_environment`` clears them again.
for _name in [n for n in os.environ if n.startswith("GALAXY_")] + ["PREFECT_API_URL", "PREFECT_API_KEY"]:
    os.environ.pop(_name, None)
os.environ["GALAXY_PROGRESS"] = "0"
# The pipeline measures against the real dev file when it sits beside the checkout (CI has it, users do not):
# no test may depend on it, so it is off unless a test names a real file.
os.environ["GALAXY_REAL"] = ""
# Tiny models run far faster on one thread than fighting over two cores (also in the CLI subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Prefect keeps cached task results under PREFECT_HOME: give every test session its own, before prefect loads.
_PREFECT_HOME = tempfile.mkdtemp(prefix="galaxy-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
# matplotlib keeps its font cache under HOME, which every test replaces: one cache for the session instead.
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="galaxy-mpl-")
torch.set_num_threads(1)


#: The longest modules, started first (scripts/test.sh sends whole modules to its two workers in collection order):
#: with the longest last, one worker would still run it while the other sat idle.
LONGEST_FIRST = ("test_scale.py", "test_flow_pipeline.py", "test_sweep.py", "test_stage_prior.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


#: The installed console script, run as a user runs it.
GALAXY = str(Path(sys.executable).with_name("galaxy"))

#: Variables that change what a test does when the caller's shell sets them.
LEAKY = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PREFECT_API_KEY")


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path, cwd: Path) -> None:
    """HOME and the working folder set to the given empty folders; GALAXY_* and tracking settings cleared; CPU."""
    monkeypatch.setenv("HOME", str(home))
    for name in [n for n in os.environ if n.startswith("GALAXY_")] + list(LEAKY):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GALAXY_PROGRESS", "0")
    monkeypatch.setenv("GALAXY_DEVICE", "cpu")
    monkeypatch.setenv("GALAXY_REAL", "")
    monkeypatch.chdir(cwd)


def forget_mlflow_store() -> None:
    """MLflow keeps the last store in module globals (and exports it to os.environ): drop it."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """Every test: its own empty HOME and working folder, no GALAXY_* or tracking server settings, the CPU.

    ``Path.home()`` follows HOME, so astroNN's cache (~/.astroNN) and ~/.cache/galaxy are the test's own.
    The working folder is a fresh one, so the default ``sqlite:///mlflow/mlflow.db`` and ``runs/`` never
    land in the checkout. Subprocesses inherit all of this.
    """
    isolate(monkeypatch, tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("cwd"))
    yield
    forget_mlflow_store()


def make_galaxy10(path: Path, n: int = 40, side: int = 64, seed: int = 0, **override) -> Path:
    """Write a small file in the official Galaxy10 schema; ``override`` replaces or drops (None) keys."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    blob = np.exp(-((yy - side / 2) ** 2 + (xx - side / 2) ** 2) / (2 * (side / 8) ** 2))
    images = (rng.random((n, 1, 1, 3)) * 200 * blob[None, :, :, None] + rng.random((n, side, side, 3)) * 30).astype(
        np.uint8
    )
    arrays = {
        "images": images,
        "ans": (np.arange(n) % 10).astype(np.uint8),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-30, 60, n),
        "redshift": rng.uniform(0.01, 0.3, n).astype(np.float32),
        "pxscale": np.full(n, 0.262, dtype=np.float32),
    }
    arrays.update(override)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


@pytest.fixture
def g10(tmp_path: Path) -> Path:
    """A valid 40-image, 64 px Galaxy10-format file."""
    return make_galaxy10(tmp_path / "g10.h5")


@pytest.fixture
def refused_url():
    """An http URL on a free local port (the OS picks it) that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/none.h5"


def enter_prefect_harness(stack: contextlib.ExitStack, attempts: int = 3) -> None:
    """Start Prefect's test harness inside ``stack``, again when its server drops the first health check.

    Prefect's start-up loop retries only refused connections; a server that accepts one and closes it while it
    starts (httpx.RemoteProtocolError, seen once in CI) failed the whole session's flow tests.
    """
    import httpx
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.testing.utilities import prefect_test_harness

    for attempt in range(1, attempts + 1):
        previous = SubprocessASGIServer._instances.get(None)
        try:
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            return
        except httpx.RemoteProtocolError:
            failed = SubprocessASGIServer._instances.get(None)
            if failed is not None and failed is not previous:
                failed.stop()  # the harness registered it as the default server and left it running
            SubprocessASGIServer._instances[None] = previous
            if attempt == attempts:
                raise


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect server (SQLite under the session's PREFECT_HOME) for flow tests."""
    with contextlib.ExitStack() as stack:
        enter_prefect_harness(stack)
        yield


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """One MLflow SQLite database with every table made: building one runs MLflow's migrations (5-10 s)."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}", registry_uri=f"sqlite:///{path}").search_experiments()
    return path


def make_store(root: Path, template: Path) -> str:
    """A fresh SQLite MLflow store at root/mlflow/mlflow.db (a copy of ``template``); returns its URI.

    The default experiment's artifact folder and creation time are set as a store created there and
    then would have them.
    """
    db = root / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(template, db)
    now = int(time.time() * 1000)
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ?"
            " WHERE experiment_id = 0",
            (str(root / "mlruns" / "0"), now, now),
        )
    con.close()
    return f"sqlite:///{db}"


def use_store(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point MLflow (this process and its children) at ``uri``."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, empty_mlflow_db) -> Path:
    """A fresh SQLite MLflow store in the test's folder, which is also the working folder."""
    monkeypatch.chdir(tmp_path)
    use_store(make_store(tmp_path, empty_mlflow_db), monkeypatch)
    return tmp_path


#: A VQ-VAE small enough to train in a second on 32 px images; a constant lr, so its one epoch learns as much as
#: it can (the demo preset's decay is tuned for 8 epochs of 3,000 images).
TINY_VQVAE = dict(image_size=32, widths=(8, 16), embedding_dim=8, codebook_size=32, batch_size=16, min_lr_ratio=1.0)


def make_tiny_data(root: Path) -> Path:
    """A prepared 32 px folder of 120 images (12 per class) under ``root``."""
    from model.data import prepare

    return prepare(make_galaxy10(root / "src.h5", n=120, side=64), root / "prepared", size=32).out


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A prepared 32 px folder of 120 images (12 per class)."""
    return make_tiny_data(tmp_path)


#: A prior small enough to train in seconds on the tiny VQ-VAE's 8x8 codes.
TINY_PRIOR = dict(dim=16, heads=2, layers=1, batch_size=16, crop=6)  # the 8x8 grid's central 6x6, as the demo crops


def cli_settings(overrides: dict) -> list[str]:
    """Config overrides as the command line takes them: ``--set=key=<JSON>`` (tuples as lists)."""
    return [f"--set={k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in overrides.items()]


def console(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `galaxy ARGS` as a new process (this environment plus ``env``); about a second of imports or more."""
    return subprocess.run(
        [GALAXY, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300
    )


#: A tiny prior for the network, sampling and training tests: vocabulary 16, grid 3x4 (T = 12 tokens).
PRIOR_K, PRIOR_GH, PRIOR_GW = 16, 3, 4
PRIOR_T = PRIOR_GH * PRIOR_GW


def tiny_prior_config(**kw):
    """A PriorConfig small enough to train in a second; ``kw`` overrides any field."""
    from model.prior import PriorConfig

    base = dict(vocab_size=PRIOR_K, grid_h=PRIOR_GH, grid_w=PRIOR_GW, num_classes=10, dim=32, heads=4, layers=2)
    return PriorConfig(**{**base, **kw})


@pytest.fixture
def model64():
    """A tiny prior in float64 so that cached and full-prefix computations agree to ~1e-15."""
    from model.prior import ConditionalPrior

    torch.manual_seed(0)
    return ConditionalPrior(tiny_prior_config()).double().eval()
