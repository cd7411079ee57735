"""Prefect cache keys follow everything that decides a stage's result, not only its parameters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tasks import cache
from tests.conftest import make_galaxy10, make_store

ROOT = Path(__file__).resolve().parents[1]


def key_in_new_process(cwd: Path, params: dict) -> str:
    call = f"cache.key_of('train-vqvae', json.loads({json.dumps(params)!r}), 'data/prepared')"
    code = f"import json; from tasks import cache; print({call})"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def forget_store_engines() -> None:
    """Drop MLflow's cached stores (one per URI) and their database engines (a class-level map of its SQL store),
    as a new process would start without them."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    with SqlAlchemyStore._engine_map_lock:
        for engine in SqlAlchemyStore._engine_map.values():
            engine.dispose()
        SqlAlchemyStore._engine_map.clear()


def test_key_changes_with_checkout_folder_store_data_and_code(tmp_path, monkeypatch, empty_mlflow_db):
    from model.data import prepare

    params = {"data_dir": "data/prepared", "preset_name": "demo", "epochs": None}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        make_store(tmp_path / name, empty_mlflow_db)  # the default store, mlflow/mlflow.db, already made
        prepare(make_galaxy10(tmp_path / name / "src.h5", seed=1), tmp_path / name / "data" / "prepared", size=32)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    monkeypatch.chdir(tmp_path / "a")
    key_a = cache.key_of("train-vqvae", params, "data/prepared")
    assert cache.key_of("train-vqvae", params, "data/prepared") == key_a  # stable
    monkeypatch.chdir(tmp_path / "b")  # same relative parameters, same data content, another checkout
    assert cache.key_of("train-vqvae", params, "data/prepared") != key_a

    monkeypatch.chdir(tmp_path / "a")
    assert key_in_new_process(tmp_path / "a", params) == key_a  # the same in another process (Prefect's workers)
    # a deleted and recreated store is another store (its default experiment made later)
    shutil.rmtree(tmp_path / "a" / "mlflow")
    time.sleep(0.002)  # creation times are in milliseconds
    make_store(tmp_path / "a", empty_mlflow_db)
    forget_store_engines()  # MLflow keeps the deleted file's engine open in this process
    key_with_store = cache.key_of("train-vqvae", params, "data/prepared")
    assert key_with_store != key_a
    prepare(make_galaxy10(tmp_path / "a" / "src.h5", seed=2), tmp_path / "a" / "data" / "prepared", size=32)
    assert cache.key_of("train-vqvae", params, "data/prepared") != key_with_store  # new data content

    monkeypatch.setattr(cache, "code_version", lambda: "another-version")
    assert cache.key_of("train-vqvae", params, "data/prepared") != key_with_store


def test_prepare_is_not_cached_while_its_output_is_absent(tmp_path):
    class Ctx:
        class task:  # noqa: N801 - mimics Prefect's context.task
            name = "prepare-data"

    assert cache.prepare_cache_key(Ctx, {"out": str(tmp_path / "none"), "source": "synthetic"}) is None


def test_key_changes_when_the_real_file_is_replaced_or_named_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "store_identity", lambda: "store")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "real.h5").write_bytes(b"first")
    (tmp_path / "b" / "real.h5").write_bytes(b"other")
    params = {"data_dir": None, "real": "real.h5"}
    monkeypatch.chdir(tmp_path / "a")
    key = cache.key_of("train-judge", params, None)
    assert cache.key_of("train-judge", params, None) == key
    monkeypatch.chdir(tmp_path / "b")
    assert cache.key_of("train-judge", params, None) != key  # same relative name, another file
    monkeypatch.chdir(tmp_path / "a")
    (tmp_path / "a" / "real.h5").write_bytes(b"replaced, longer")
    assert cache.key_of("train-judge", params, None) != key  # the file at that path changed
