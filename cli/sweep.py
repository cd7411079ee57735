"""`galaxy sweep`: an Optuna sweep over codebook size, embedding dim and quantizer options (SPEC O3)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import user_errors


@user_errors
def sweep_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    trials: int = typer.Option(8, "--trials", min=1, help="Trials in all (shared by the workers)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Worker processes drawing trials from one study."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL (default sqlite:///mlflow/optuna.db)."),
    preset: str = typer.Option("demo", "--preset", help="VQ-VAE preset every trial starts from."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs per trial (default: the preset's)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: derived from data and preset)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Optuna sweep over codebook size, embedding dim and quantizer options; registers the best trial."""
    from tasks.sweep import run_sweep

    result = run_sweep(data, trials, workers, storage=storage, preset_name=preset, epochs=epochs, seed=seed, study_name=study)
    typer.echo(f"study {result.study_name}: best val MSE {result.best_value:.5f} with {result.best_params}")
    typer.echo(f"parent run {result.parent_run_id}; best model {result.model_uri}")
