"""MLflow plumbing shared by every stage: the store, experiments, tags, params, images and figures.

The default store is ``sqlite:///mlflow/mlflow.db`` (relative to the working folder) with artifacts under
``mlflow/artifacts``; ``MLFLOW_TRACKING_URI`` points every command at any other store or server.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

DEFAULT_URI = "sqlite:///mlflow/mlflow.db"
ROOT = Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the local SQLite store (its folder is created)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    Path("mlflow").mkdir(exist_ok=True)
    return DEFAULT_URI


def setup() -> str:
    """Point the MLflow client at the configured store and return its URI."""
    uri = tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def artifact_root() -> str | None:
    """Artifacts go under mlflow/artifacts for a local SQLite store; a server decides for itself."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def experiment(name: str) -> str:
    """Id of the experiment ``name``, created (with the local artifact root) when missing."""
    setup()
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root())
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel worker
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_commit() -> str:
    """The project's git commit (with '-dirty' when the tree has changes), or 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def base_tags(data_meta: dict | None = None, device: str | None = None, **extra: Any) -> dict[str, str]:
    """Tags every run carries: git commit, data hash, source, device, and 'synthetic' when it is."""
    tags = {"git_commit": git_commit()}
    if data_meta is not None:
        tags["data_key"] = data_meta["key"]
        if "source_blake3" in data_meta:  # absent from folders prepared before version 2
            tags["data_blake3"] = data_meta["source_blake3"]
        tags["data_source"] = data_meta["source"]
        tags["synthetic"] = str(bool(data_meta.get("synthetic", False))).lower()
    if device is not None:
        tags["device"] = device
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def run_name(stage: str, data_meta: dict | None) -> str:
    """Run names say 'synthetic' when the data is synthetic (SPEC D2)."""
    return f"{stage}-synthetic" if data_meta and data_meta.get("synthetic") else stage


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts -> flat 'a.b' keys with string values, as MLflow params."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


@contextmanager
def run(
    experiment_name: str, name: str, tags: dict[str, str], *, nested: bool = False, run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume, given ``run_id``) a run in ``experiment_name``."""
    exp_id = experiment(experiment_name)
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else exp_id,
        run_name=None if run_id else name,
        nested=nested,
        tags=tags,
    ) as active:
        yield active


class MetricLogger:
    """A training-loop callback ``log(metrics, step)`` that writes to the active MLflow run."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        clean = {f"{self.prefix}{k}": float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        mlflow.log_metrics(clean, step=step)


def log_image(image: np.ndarray, artifact_file: str) -> None:
    """Log a (H, W, 3) uint8 image as a PNG artifact."""
    mlflow.log_image(np.ascontiguousarray(image), artifact_file=artifact_file)


def log_figure(fig, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact and close it."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, artifact_file)
    plt.close(fig)


def log_array(array: np.ndarray, artifact_file: str) -> None:
    """Log a numpy array as an .npy artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        np.save(path, array)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent) if "/" in artifact_file else None)
