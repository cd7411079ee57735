"""The `galaxy` flow: every stage in order (data, VQ-VAE, atlas, prior, sampling grids, judge), then a summary.

Deployments in prefect.yaml run this one flow with different ``stages``: ``galaxy/full`` runs them all,
``galaxy/sweep`` runs the data stage and an Optuna sweep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from tasks.data import DEFAULT_SYNTH_N, prepare_task, resolve_source
from tasks.summary import publish_summary

#: The 50 real labelled Galaxy10 images a checkout of this project may sit beside (never training data).
REAL_DEV_FILE = Path(__file__).resolve().parents[2] / "shared" / "real-dev" / "galaxy10_real_dev.h5"

Stage = Literal["data", "vqvae", "atlas", "prior", "samples", "judge", "evaluate", "sweep"]
ALL_STAGES: tuple[str, ...] = ("data", "vqvae", "atlas", "prior", "samples", "judge", "evaluate")


class PipelineConfig(BaseModel):
    """Every setting of a pipeline run, validated before any stage starts."""

    source: str = Field("synthetic", description="synthetic, h5:PATH or astronn")
    synthetic_n: int = Field(DEFAULT_SYNTH_N, ge=10, description="images in the synthetic set")
    data_dir: str = Field("data/prepared", description="folder of the prepared dataset")
    size: int = Field(128, ge=16, le=512, description="image side after preparation")
    seed: int = Field(0, description="seed of the split, the synthetic set and every model")
    stages: list[Stage] = Field(
        default_factory=lambda: list(ALL_STAGES), description="stages to run, in pipeline order"
    )
    vqvae_preset: Literal["demo", "article"] = "demo"
    vqvae_epochs: Optional[int] = Field(None, ge=1, description="override the preset's epochs")
    prior_preset: Literal["demo", "article"] = "demo"
    prior_epochs: Optional[int] = Field(None, ge=1)
    prior_condition: Optional[str] = Field(
        "redshift",
        description="a numeric column of the prepared data the prior is conditioned on beside the class (Fourier "
        "features; sample with --redshift); None: the class only",
    )
    judge_preset: Literal["demo", "article"] = "demo"
    judge_epochs: Optional[int] = Field(None, ge=1)
    vqvae_overrides: dict = Field(
        default_factory=dict, description="any VQ-VAE config field, e.g. {'codebook_size': 512}"
    )
    prior_overrides: dict = Field(default_factory=dict)
    judge_overrides: dict = Field(default_factory=dict)
    limit: Optional[int] = Field(None, ge=16, description="use only the first N images of each split (smoke tests)")
    real: Optional[str] = Field(
        None,
        description="a labelled real Galaxy10-format .h5: the judge is scored on it and a synthetic source is "
        "compared with it (realism report); default: $GALAXY_REAL, else the real dev file when present",
    )
    sweep_trials: int = Field(8, ge=1, description="trials to finish; W workers may finish up to W - 1 more")
    sweep_workers: int = Field(2, ge=1)
    sweep_storage: Optional[str] = Field(None, description="Optuna RDB URL; default sqlite:///mlflow/optuna.db")


def real_file(config: PipelineConfig) -> str | None:
    """The real labelled file to measure against: the setting, else $GALAXY_REAL ('' turns it off), else the
    real dev file beside the checkout when it exists, else None."""
    if config.real:
        return config.real
    env = os.environ.get("GALAXY_REAL")
    if env is not None:
        return env or None
    return str(REAL_DEV_FILE) if REAL_DEV_FILE.is_file() else None


def needs(config: PipelineConfig, *stages: str) -> bool:
    """Whether any of ``stages`` is selected (a stage also runs when a later selected one needs it)."""
    return any(stage in config.stages for stage in stages)


@flow(name="galaxy", log_prints=False)
def galaxy(config: PipelineConfig = PipelineConfig()) -> dict:
    """Run the selected stages in order and publish a summary table linking every MLflow run."""
    from tasks.atlas import atlas_task
    from tasks.evaluate import evaluate_task
    from tasks.judge import train_judge_task
    from tasks.prior import train_prior_task
    from tasks.realism import realism_task
    from tasks.samples import sampling_grids_task
    from tasks.sweep import sweep_task
    from tasks.vqvae import train_vqvae_task

    log = get_run_logger()
    results: dict = {}
    data_dir = prepare_task(
        config.source, config.data_dir, size=config.size, seed=config.seed, synthetic_n=config.synthetic_n
    )
    results["data"] = {"data_dir": data_dir}
    real = real_file(config)
    if real and config.source == "synthetic" and config.stages != ["data"]:
        synthetic, _ = resolve_source(config.source, synthetic_n=config.synthetic_n, seed=config.seed)
        realism = realism_task(real, str(synthetic), str(Path(data_dir) / "realism"), size=config.size)
        results["realism"] = realism.summary()
        log.info(realism.last_line)

    if needs(config, "vqvae", "atlas", "prior", "samples", "evaluate"):
        overrides = {"seed": config.seed, **config.vqvae_overrides}
        results["vqvae"] = train_vqvae_task(data_dir, config.vqvae_preset, config.vqvae_epochs, overrides, config.limit)
        log.info("VQ-VAE %s: %s", results["vqvae"]["model_uri"], results["vqvae"]["metrics"])
    if needs(config, "atlas"):
        results["atlas"] = atlas_task(results["vqvae"]["model_uri"], data_dir, limit=config.limit, seed=config.seed)
    if needs(config, "prior", "samples", "evaluate"):
        overrides = {"seed": config.seed, "condition": config.prior_condition, **config.prior_overrides}
        results["prior"] = train_prior_task(
            results["vqvae"]["model_uri"], data_dir, config.prior_preset, config.prior_epochs, overrides, config.limit
        )
        log.info("sampler %s: %s", results["prior"]["model_uri"], results["prior"]["metrics"])
    if needs(config, "samples"):
        sampling_grids_task(results["prior"]["run_id"], results["prior"]["model_uri"], seed=config.seed)
        results["samples"] = {"run_id": results["prior"]["run_id"], "metrics": {}, "note": "grids under samples/"}
    if needs(config, "judge", "evaluate"):
        overrides = {"seed": config.seed, **config.judge_overrides}
        results["judge"] = train_judge_task(
            data_dir, config.judge_preset, config.judge_epochs, overrides, config.limit, real=real
        )
    if needs(config, "evaluate"):
        results["evaluate"] = evaluate_task(
            results["prior"]["model_uri"], data_dir, results["judge"]["model_uri"], limit=config.limit, seed=config.seed
        )
    if needs(config, "sweep"):
        results["sweep"] = sweep_task(
            data_dir,
            config.sweep_trials,
            config.sweep_workers,
            config.sweep_storage,
            preset_name=config.vqvae_preset,
            epochs=config.vqvae_epochs,
            limit=config.limit,
            seed=config.seed,
            overrides={"seed": config.seed, **config.vqvae_overrides},
        )
    publish_summary(results)
    return results
