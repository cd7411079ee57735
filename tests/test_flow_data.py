"""The data flow under a real Prefect server: it prepares once, and its task cache follows the disk.

The prepare task's cache key reads the MLflow store's identity, so the test gets a store of its own.
"""

from __future__ import annotations

import shutil

from flows.data import data_flow
from model.data import load_prepared
from tests.conftest import make_galaxy10


def test_data_flow_prepares_and_caches(prefect_server, mlflow_store, tmp_path):
    src = make_galaxy10(tmp_path / "g.h5")
    out = tmp_path / "prepared"
    root = data_flow(source=f"h5:{src}", out=str(out), size=32)
    data = load_prepared(root)
    assert data.images.shape == (40, 32, 32, 3)
    stamp = (out / "images.npy").stat().st_mtime_ns
    assert data_flow(source=f"h5:{src}", out=str(out), size=32) == root
    assert (out / "images.npy").stat().st_mtime_ns == stamp  # the cached task did not rewrite it
    shutil.rmtree(out)  # a deleted output must be rebuilt, not served from the task cache
    assert load_prepared(data_flow(source=f"h5:{src}", out=str(out), size=32)).images.shape == (40, 32, 32, 3)
