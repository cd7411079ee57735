"""`galaxy sweep`: an Optuna sweep over codebook size, embedding dim and quantizer options (SPEC O3).

`galaxy sweep-worker` (hidden) is what each worker process runs; more workers on other machines join a study
with it, given the storage URL in $GALAXY_SWEEP_STORAGE (never on the command line: it may hold a password).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import parse_settings, user_errors
from model.errors import UserError


@user_errors
def sweep_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    trials: int = typer.Option(8, "--trials", help="Trials to finish in all (W workers: up to W - 1 more)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes drawing trials from one study."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna RDB URL (default sqlite:///mlflow/optuna.db)."
    ),
    preset: str = typer.Option("demo", "--preset", help="VQ-VAE preset every trial starts from."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs per trial (default: the preset's)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: derived from data and preset)."),
    seed: int = typer.Option(0, "--seed"),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="Fix a setting for every trial: --set lr=3e-4."),
) -> None:
    """Optuna sweep over codebook size, embedding dim and quantizer options; registers the best trial."""
    if trials < 1:
        raise UserError("--trials", f"{trials} is below 1")
    if workers < 1:
        raise UserError("--workers", f"{workers} is below 1")
    from tasks.sweep import run_sweep
    from tasks.sweep_study import storage_url

    try:
        storage_url(storage)
    except UserError as err:
        raise UserError("--storage", err.problem) from None
    result = run_sweep(
        data,
        trials,
        workers,
        storage=storage,
        preset_name=preset,
        epochs=epochs,
        seed=seed,
        study_name=study,
        overrides=parse_settings(settings),
    )
    typer.echo(f"study {result.study_name}: best val MSE {result.best_value:.5f} with {result.best_params}")
    typer.echo(f"parent run {result.parent_run_id}; best model {result.model_uri}")


@user_errors
def sweep_worker_cmd(
    study: str = typer.Option(..., "--study", help="Study created by galaxy sweep."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder holding the study's data."),
    worker_index: int = typer.Option(0, "--worker-index", min=0, help="Offsets the sampler's seed."),
) -> None:
    """Run a study's trials until it has its N; the storage URL comes from $GALAXY_SWEEP_STORAGE (not argv)."""
    from tasks.sweep_trial import worker_main

    n = worker_main(study, data, worker_index)
    typer.echo(f"worker {worker_index}: ran {n} trials of study {study}")
