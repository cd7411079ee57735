"""Cache keys for Prefect tasks: the inputs, plus everything outside them that decides the result.

Prefect keeps cached results under the worker's PREFECT_HOME, shared by every checkout on the machine,
so a key made of the parameters alone would hand one checkout another's results (or results from an
older version of the code, or from an MLflow store that has since been deleted). A stage's key is
therefore: its parameters with paths made absolute, the prepared data's content key, the code's
identity (a hash of the library and the tasks), and the tracking store's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import mlflow

from model.data import read_meta
from tasks import tracking

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of every source file of model/ and tasks/: a new preset or a fix invalidates old results."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "model").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def store_identity() -> str:
    """The tracking store: its URI (a SQLite file by absolute path) and when its default experiment was made.

    A deleted and recreated store gets a new creation time, so results cached against the old one
    (run ids, registered versions) are not served from it.
    """
    uri = tracking.setup()
    if uri.startswith("sqlite:///"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    try:
        created = mlflow.MlflowClient().get_experiment("0").creation_time
    except Exception:  # a server that is down or has no default experiment: the URI alone
        created = None
    return f"{uri}#{created}"


def _absolute(parameters: dict) -> dict:
    """Paths made absolute; a real file to score on also stands for its size and modification time."""
    out = dict(parameters)
    for key in ("data_dir", "out", "real"):
        if isinstance(out.get(key), (str, os.PathLike)):
            out[key] = str(Path(out[key]).resolve())
    if out.get("real") and Path(out["real"]).is_file():
        stat = Path(out["real"]).stat()
        out["real"] = f"{out['real']}#{stat.st_size}#{stat.st_mtime_ns}"
    return out


def key_of(name: str, parameters: dict, data_dir: str | None) -> str:
    meta = (read_meta(data_dir) or {}) if data_dir else {}
    text = json.dumps(
        {"params": _absolute(parameters), "data": meta.get("key"), "code": code_version(), "store": store_identity()},
        sort_keys=True,
        default=str,
    )
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def stage_cache_key(context, parameters) -> str:
    """For tasks with a ``data_dir`` parameter that log to MLflow (train, atlas)."""
    return key_of(context.task.name, parameters, parameters.get("data_dir"))


def prepare_cache_key(context, parameters) -> str | None:
    """For the prepare task: its output folder's content key; no cache while that folder is absent."""
    if read_meta(parameters["out"]) is None:
        return None
    return key_of(context.task.name, parameters, parameters["out"])
