"""The champion rule (``tasks.registry.promote``) against a real SQLite MLflow store, with stand-in versions.

Every stage registers a version and then calls ``promote`` with its own metric and direction. Here each
version is a run that carries only that metric, so a case costs milliseconds instead of a training run.
The stages' own calls (which metric, which direction) are tested in test_stage_vqvae.py,
test_stage_prior.py and test_stage_judge.py with a champion no real model can beat.
"""

from __future__ import annotations

import mlflow
import pytest

from tasks.champion import ChampionRule
from tasks.registry import promote, promote_sampler_by_samples, record_sample_scores, tokenizer_scope

# (registered model, the metric its stage compares, higher is better, the scope tag), as tasks/{vqvae,prior,judge}.py
STAGES = [
    ("galaxy-vqvae", "final_val_mse", False, "data_key"),
    ("galaxy-sampler", "final_val_bits_per_token", False, "tokenizer"),
    ("galaxy-judge", "best_val_balanced_acc", True, "data_key"),
]


def register(name: str, metric: str, value: float, tags: dict[str, str] | None = None) -> str:
    """A new version of ``name`` whose run logged ``metric`` = ``value`` (and ``tags``); returns its version number."""
    client = mlflow.MlflowClient()
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_metric(metric, value)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return str(version.version)


def champion(name: str) -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version)


@pytest.mark.parametrize("better_first", [True, False], ids=["better-first", "worse-first"])
@pytest.mark.parametrize("name, metric, higher_is_better, scope", STAGES, ids=[s[0] for s in STAGES])
def test_champion_is_the_better_version_in_either_order(
    mlflow_store, name, metric, higher_is_better, scope, better_first
):
    good, bad = (0.9, 0.4) if higher_is_better else (0.4, 0.9)
    first, second = (good, bad) if better_first else (bad, good)
    same = {scope: "a"}
    v1 = register(name, metric, first, same)
    assert promote(name, v1, ChampionRule(metric, first, higher_is_better, scope)) is True  # the first one is
    assert champion(name) == v1
    v2 = register(name, metric, second, same)
    assert promote(name, v2, ChampionRule(metric, second, higher_is_better, scope)) is (not better_first)
    assert champion(name) == (v1 if better_first else v2)
    # a third version that ties the champion does not take the alias (only a strictly better one does)
    v3 = register(name, metric, good, same)
    assert promote(name, v3, ChampionRule(metric, good, higher_is_better, scope)) is False
    assert champion(name) == (v1 if better_first else v2)


def test_a_champion_without_the_metric_is_replaced(mlflow_store):
    client = mlflow.MlflowClient()
    v1 = register("galaxy-judge", "other_metric", 1.0, {"data_key": "a"})
    client.set_registered_model_alias("galaxy-judge", "champion", v1)
    v2 = register("galaxy-judge", "best_val_balanced_acc", 0.1, {"data_key": "a"})
    assert promote("galaxy-judge", v2, ChampionRule("best_val_balanced_acc", 0.1, True, "data_key")) is True
    assert champion("galaxy-judge") == v2


def test_a_model_of_other_data_takes_the_alias_however_it_scores(mlflow_store):
    # validation numbers of two datasets do not compare: the champion serves the data being worked on
    v1 = register("galaxy-vqvae", "final_val_mse", 0.001, {"data_key": "synthetic"})
    assert promote("galaxy-vqvae", v1, ChampionRule("final_val_mse", 0.001, False, "data_key")) is True
    v2 = register("galaxy-vqvae", "final_val_mse", 0.5, {"data_key": "real"})
    assert promote("galaxy-vqvae", v2, ChampionRule("final_val_mse", 0.5, False, "data_key")) is True
    assert champion("galaxy-vqvae") == v2
    v3 = register("galaxy-vqvae", "final_val_mse", 0.6, {"data_key": "real"})  # same data, worse: stays
    assert promote("galaxy-vqvae", v3, ChampionRule("final_val_mse", 0.6, False, "data_key")) is False


def test_a_redshift_conditioned_sampler_on_the_same_vqvae_waits_for_the_evaluation(mlflow_store):
    rule = dict(higher_is_better=False, scope_tag="tokenizer", other_scope_wins=False)
    v1 = register("galaxy-sampler", "final_val_bits_per_token", 6.0, {"tokenizer": tokenizer_scope("vq-A", None)})
    assert promote("galaxy-sampler", v1, ChampionRule("final_val_bits_per_token", 6.0, **rule)) is True
    # fewer bits given (class, z) than given the class: more information, not a better model of the same thing
    v2 = register("galaxy-sampler", "final_val_bits_per_token", 5.0, {"tokenizer": tokenizer_scope("vq-A", "redshift")})
    assert promote("galaxy-sampler", v2, ChampionRule("final_val_bits_per_token", 5.0, **rule)) is False
    assert champion("galaxy-sampler") == v1


def test_sampler_on_another_tokenizer_waits_for_the_evaluation(mlflow_store):
    rule = dict(higher_is_better=False, scope_tag="tokenizer", other_scope_wins=False)
    v1 = register("galaxy-sampler", "final_val_bits_per_token", 6.0, {"tokenizer": "vq-A"})
    assert promote("galaxy-sampler", v1, ChampionRule("final_val_bits_per_token", 6.0, **rule)) is True
    # far fewer bits on tokenizer B, but those bits count other symbols: no promotion at registration
    v2 = register("galaxy-sampler", "final_val_bits_per_token", 1.0, {"tokenizer": "vq-B"})
    assert promote("galaxy-sampler", v2, ChampionRule("final_val_bits_per_token", 1.0, **rule)) is False
    assert champion("galaxy-sampler") == v1
    uri = {v: f"models:/galaxy-sampler/{v}" for v in (v1, v2)}
    metric = "eval_cond_balanced_acc_cfg3"
    # the champion was never evaluated: a measured sampler beats an unmeasured one (its score recorded as before
    # eval_top_p was: taken as top-p 1, the default then)
    record_sample_scores(uri[v2], {metric: 0.3})
    assert promote_sampler_by_samples(uri[v2], metric, 0.3, top_p=1.0) is True and champion("galaxy-sampler") == v2
    # the old champion evaluated higher at the same top-p: it takes the alias back; a lower score does not
    record_sample_scores(uri[v1], {metric: 0.5, "eval_top_p": 1.0})
    assert promote_sampler_by_samples(uri[v1], metric, 0.5, top_p=1.0) is True and champion("galaxy-sampler") == v1
    assert promote_sampler_by_samples(uri[v2], metric, 0.3, top_p=1.0) is False and champion("galaxy-sampler") == v1
    assert (
        mlflow.get_run(mlflow.MlflowClient().get_model_version("galaxy-sampler", v2).run_id).data.metrics[metric] == 0.3
    )
    # samples drawn at another top-p than the champion's last evaluation are not compared: the champion stays
    record_sample_scores(uri[v2], {metric: 0.9, "eval_top_p": 0.9})
    assert promote_sampler_by_samples(uri[v2], metric, 0.9, top_p=0.9) is False and champion("galaxy-sampler") == v1
    record_sample_scores(uri[v1], {metric: 0.55, "eval_top_p": 0.9})  # the champion evaluated at 0.9 too
    assert promote_sampler_by_samples(uri[v2], metric, 0.9) is True and champion("galaxy-sampler") == v2  # default
    record_sample_scores(uri[v1], {metric: 0.95, "eval_top_p": 0.9})
    assert promote_sampler_by_samples(uri[v1], metric, 0.95) is True and champion("galaxy-sampler") == v1
    # within one tokenizer bits/token decided: a better evaluation changes nothing
    v3 = register("galaxy-sampler", "final_val_bits_per_token", 7.0, {"tokenizer": "vq-A"})
    assert promote("galaxy-sampler", v3, ChampionRule("final_val_bits_per_token", 7.0, **rule)) is False
    record_sample_scores(f"models:/galaxy-sampler/{v3}", {metric: 0.9})
    assert promote_sampler_by_samples(f"models:/galaxy-sampler/{v3}", metric, 0.9) is False
    assert champion("galaxy-sampler") == v1
