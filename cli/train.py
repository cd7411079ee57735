"""`galaxy train ...`: train the VQ-VAE, the prior or the judge (logged to MLflow, registered).

Every training command takes the same options: the prepared data, a preset, an epoch count, ``--set`` overrides
of any config field, and ``--fresh`` to ignore a checkpoint left by an interrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import echo_model, parse_settings, user_errors

app = typer.Typer(no_args_is_help=True, help="Train the VQ-VAE, the prior or the judge (logged to MLflow).")

DATA = typer.Option(..., "--data", help="Prepared dataset folder.")
PRESET = typer.Option("demo", "--preset", help="demo (CPU, minutes) or article (the article's sizes, a GPU job).")
EPOCHS = typer.Option(None, "--epochs", min=1, help="Override the preset's epochs.")
SETTINGS = typer.Option(None, "--set", help="Override any config field, e.g. --set codebook_size=512 (JSON values).")
FRESH = typer.Option(False, "--fresh", help="Ignore a checkpoint left by an interrupted run.")


@app.command("vqvae")
@user_errors
def train_vqvae_cmd(
    data: Path = DATA,
    preset: str = PRESET,
    epochs: Optional[int] = EPOCHS,
    settings: Optional[list[str]] = SETTINGS,
    fresh: bool = FRESH,
) -> None:
    """Train a VQ-VAE, log it to MLflow and register it as galaxy-vqvae."""
    from tasks.vqvae import train_vqvae_run

    ref = train_vqvae_run(data, preset, epochs=epochs, overrides=parse_settings(settings), resume=not fresh)
    m = ref.metrics
    typer.echo(
        f"run {ref.run_id}: val PSNR {m['final_val_psnr']:.2f} dB, utilisation {m['final_val_utilisation']:.1%}, "
        f"perplexity {m['final_val_perplexity']:.1f}"
    )
    echo_model(ref, "galaxy-vqvae")


@app.command("prior")
@user_errors
def train_prior_cmd(
    vqvae: str = typer.Option(..., "--vqvae", help="Registered VQ-VAE, e.g. models:/galaxy-vqvae@champion."),
    data: Path = DATA,
    preset: str = PRESET,
    epochs: Optional[int] = EPOCHS,
    settings: Optional[list[str]] = SETTINGS,
    grids: bool = typer.Option(True, "--grids/--no-grids", help="Log the sampling grids when training ends."),
    condition: Optional[str] = typer.Option(
        None, "--condition", help="Also condition on a numeric column of the prepared data, e.g. redshift."
    ),
    fresh: bool = FRESH,
) -> None:
    """Train the class-conditional prior on the VQ-VAE's codes and register galaxy-sampler."""
    from tasks.prior import train_prior_run

    overrides = parse_settings(settings)
    if condition is not None:
        overrides["condition"] = condition
    ref = train_prior_run(vqvae, data, preset, epochs=epochs, overrides=overrides, resume=not fresh)
    if grids and not ref.already_complete:
        from tasks.samples import log_sampling_grids

        log_sampling_grids(ref.run_id, ref.model_uri)
    m = ref.metrics
    alone = ""
    if "val_bits_per_token_class" in m:
        alone = (
            f", class alone {m['val_bits_per_token_class']:.3f}, "
            f"{condition or 'condition'} alone {m['val_bits_per_token_condition']:.3f}"
        )
    typer.echo(
        f"run {ref.run_id}: val {m.get('val_bits_per_token', float('nan')):.3f} bits/token{alone} "
        f"(unigram entropy {m.get('unigram_bits_per_token', float('nan')):.3f})"
    )
    echo_model(ref, "galaxy-sampler")


@app.command("judge")
@user_errors
def train_judge_cmd(
    data: Path = DATA,
    preset: str = PRESET,
    epochs: Optional[int] = EPOCHS,
    settings: Optional[list[str]] = SETTINGS,
    limit: Optional[int] = typer.Option(None, "--limit", min=16, help="Use only the first N training images."),
    real: Optional[Path] = typer.Option(
        None, "--real", help="A labelled Galaxy10-format .h5 of real images to score the trained judge on."
    ),
    fresh: bool = FRESH,
) -> None:
    """Train the morphology judge on the training split and register it as galaxy-judge."""
    from model.galaxy10 import CLASS_NAMES
    from tasks.judge import slug, train_judge_run

    ref = train_judge_run(
        data, preset, epochs=epochs, overrides=parse_settings(settings), limit=limit, resume=not fresh, real=real
    )
    m = ref.metrics
    typer.echo(
        f"run {ref.run_id}: test balanced accuracy {m['test_balanced_accuracy']:.3f} "
        f"[{m['test_balanced_accuracy_lo']:.3f}, {m['test_balanced_accuracy_hi']:.3f}] "
        f"(accuracy {m['test_accuracy']:.3f}, train {m['train_accuracy']:.3f}, "
        f"best val balanced {m['best_val_balanced_acc']:.3f})"
    )
    echo_model(ref, "galaxy-judge")
    if real is not None:
        typer.echo(
            f"real {real.name}: balanced accuracy {m['judge_real_balanced_accuracy']:.3f} "
            f"[{m['judge_real_balanced_accuracy_lo']:.3f}, {m['judge_real_balanced_accuracy_hi']:.3f}] "
            f"(accuracy {m['judge_real_accuracy']:.3f}); recall per class:"
        )
        for c, name in enumerate(CLASS_NAMES):
            if (key := f"judge_real_recall_{c}_{slug(name)}") in m:
                typer.echo(f"  {c} {name:<26} {m[key]:.3f}")
