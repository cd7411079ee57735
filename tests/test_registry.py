"""The champion rule (``tasks.registry.promote``) against a real SQLite MLflow store, with stand-in versions.

Every stage registers a version and then calls ``promote`` with its own metric and direction. Here each
version is a run that carries only that metric, so a case costs milliseconds instead of a training run.
The stages' own calls (which metric, which direction) are tested in test_stage_vqvae.py,
test_stage_prior.py and test_stage_judge.py with a champion no real model can beat.
"""

from __future__ import annotations

import mlflow
import pytest

from tasks.registry import promote

# (registered model, the metric its stage compares, higher is better), as tasks/{vqvae,prior,judge}.py call it
STAGES = [
    ("galaxy-vqvae", "final_val_mse", False),
    ("galaxy-sampler", "final_val_bits_per_token", False),
    ("galaxy-judge", "test_accuracy", True),
]


def register(name: str, metric: str, value: float) -> str:
    """A new version of ``name`` whose run logged ``metric`` = ``value``; returns its version number."""
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_metric(metric, value)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return str(version.version)


def champion(name: str) -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version)


@pytest.mark.parametrize("better_first", [True, False], ids=["better-first", "worse-first"])
@pytest.mark.parametrize("name, metric, higher_is_better", STAGES, ids=[s[0] for s in STAGES])
def test_champion_is_the_better_version_in_either_order(mlflow_store, name, metric, higher_is_better, better_first):
    good, bad = (0.9, 0.4) if higher_is_better else (0.4, 0.9)
    first, second = (good, bad) if better_first else (bad, good)
    v1 = register(name, metric, first)
    assert promote(name, v1, metric, first, higher_is_better) is True  # no champion yet: the first one is
    assert champion(name) == v1
    v2 = register(name, metric, second)
    assert promote(name, v2, metric, second, higher_is_better) is (not better_first)
    assert champion(name) == (v1 if better_first else v2)
    # a third version that ties the champion does not take the alias (only a strictly better one does)
    v3 = register(name, metric, good)
    assert promote(name, v3, metric, good, higher_is_better) is False
    assert champion(name) == (v1 if better_first else v2)


def test_a_champion_without_the_metric_is_replaced(mlflow_store):
    client = mlflow.MlflowClient()
    v1 = register("galaxy-judge", "other_metric", 1.0)
    client.set_registered_model_alias("galaxy-judge", "champion", v1)
    v2 = register("galaxy-judge", "test_accuracy", 0.1)
    assert promote("galaxy-judge", v2, "test_accuracy", 0.1, higher_is_better=True) is True
    assert champion("galaxy-judge") == v2
