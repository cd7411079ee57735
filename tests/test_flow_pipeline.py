"""The `galaxy` flow end to end on tiny settings under a real Prefect server and a real MLflow store."""

from __future__ import annotations

import mlflow
import pytest
from prefect.client.orchestration import get_client
from pydantic import ValidationError

from flows.pipeline import PipelineConfig, galaxy
from tests.conftest import TINY_PRIOR, TINY_VQVAE, make_galaxy10

# one xdist worker runs this module (--dist loadfile), so the session starts one Prefect server, not one per worker

TINY_JUDGE = dict(image_size=32, widths=(8, 16), batch_size=16)


def tiny_config(tmp_path, stages, **extra) -> PipelineConfig:
    """Tiny settings on a 120-image Galaxy10-format file (unless ``extra`` names another source)."""
    source = extra.pop("source", None) or f"h5:{make_galaxy10(tmp_path / 'src.h5', n=120, side=64)}"
    return PipelineConfig(
        **{
            "source": source,
            "data_dir": str(tmp_path / "prepared"),
            "size": 32,
            "stages": stages,
            "vqvae_epochs": 1,
            "vqvae_overrides": TINY_VQVAE,
            "prior_epochs": 1,
            "prior_overrides": TINY_PRIOR,
            "judge_epochs": 1,
            "judge_overrides": TINY_JUDGE,
            **extra,
        }
    )


def test_config_is_validated():
    with pytest.raises(ValidationError):
        PipelineConfig(stages=["data", "telescope"])
    with pytest.raises(ValidationError):
        PipelineConfig(vqvae_preset="huge")
    with pytest.raises(ValidationError):
        PipelineConfig(size=3)


def test_full_flow_runs_every_stage(prefect_server, mlflow_store, tmp_path):
    """Every stage on the synthetic source with a real file beside it: the realism report runs and the judge is
    scored on the real images too."""
    real = make_galaxy10(tmp_path / "real.h5", n=30, side=64, seed=1)
    stages = ["data", "vqvae", "atlas", "prior", "samples", "judge", "evaluate"]
    config = tiny_config(tmp_path, stages, source="synthetic", synthetic_n=120, real=str(real))
    results = galaxy(config)
    assert set(results) == {"data", "realism", "vqvae", "atlas", "prior", "samples", "judge", "evaluate"}
    client = mlflow.MlflowClient()
    for stage in ("vqvae", "atlas", "prior", "judge", "evaluate"):
        assert client.get_run(results[stage]["run_id"]).info.status == "FINISHED", stage
    for name in ("galaxy-vqvae", "galaxy-sampler", "galaxy-judge"):
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1", name
    assert {"cond_balanced_acc_cfg3", "cond_balanced_acc_cfg3_lo"} <= set(results["evaluate"]["metrics"])
    samples = {
        a.path for a in mlflow.artifacts.list_artifacts(run_id=results["prior"]["run_id"], artifact_path="samples")
    }
    assert "samples/cfg_3.png" in samples
    realism = results["realism"]  # the realism report, a run in galaxy-data; the judge scored on the real images
    assert 0.0 <= realism["metrics"]["realism_auc"] <= 1.0
    run = client.get_run(realism["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "galaxy-data"
    assert run.data.metrics["realism_auc"] == realism["metrics"]["realism_auc"]
    judge = client.get_run(results["judge"]["run_id"]).data.metrics
    assert 0.0 <= judge["judge_real_balanced_accuracy"] <= 1.0
    assert "judge_real_balanced_accuracy" in results["judge"]["metrics"]

    import asyncio

    async def summary():
        async with get_client() as c:
            return await c.read_artifacts()

    artifacts = [a for a in asyncio.run(summary()) if a.key == "galaxy-summary"]
    assert artifacts, "the flow publishes its summary artifact"
    text = artifacts[-1].data
    assert "galaxy-vqvae/1" in text and "cond_balanced_acc_cfg3" in text and results["prior"]["run_id"] in text

    # a second run of the same config is served from the task cache: no training, no new model versions
    def counts():
        runs = sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())
        return runs, {
            n: len(client.search_model_versions(f"name='{n}'"))
            for n in ("galaxy-vqvae", "galaxy-sampler", "galaxy-judge")
        }

    before = counts()
    again = galaxy(config.model_copy(update={"stages": ["data", "vqvae", "prior", "judge"]}))
    assert (
        again["vqvae"] == results["vqvae"] and again["prior"] == results["prior"] and again["judge"] == results["judge"]
    )
    assert counts() == before


def test_real_file_comes_from_the_setting_then_galaxy_real_then_the_dev_file(monkeypatch, tmp_path):
    import flows.pipeline as P

    dev = tmp_path / "dev.h5"
    monkeypatch.setattr(P, "REAL_DEV_FILE", dev)
    monkeypatch.delenv("GALAXY_REAL", raising=False)
    assert P.real_file(PipelineConfig()) is None  # no setting, no variable, no dev file
    dev.touch()
    assert P.real_file(PipelineConfig()) == str(dev)
    monkeypatch.setenv("GALAXY_REAL", "")
    assert P.real_file(PipelineConfig()) is None  # '' turns it off
    monkeypatch.setenv("GALAXY_REAL", "/data/other.h5")
    assert P.real_file(PipelineConfig()) == "/data/other.h5"
    assert P.real_file(PipelineConfig(real="/data/mine.h5")) == "/data/mine.h5"
