"""`galaxy train judge` and `galaxy evaluate`: the morphology judge and the evaluation of a sampler (SPEC E1).

cli/main.py registers these functions at its end:

    from cli.evaluate import evaluate_cmd, train_judge_cmd  # noqa: E402
    train_app.command("judge")(train_judge_cmd)
    app.command("evaluate")(evaluate_cmd)

cli.main's ``user_errors`` is looked up when a command runs, not at import, so either module can be
imported first without a circular import.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

import typer

from model.errors import UserError

SAMPLER_URI = "models:/galaxy-sampler@champion"
JUDGE_URI = "models:/galaxy-judge@champion"


def user_errors(fn: Callable) -> Callable:
    """cli.main.user_errors (UserError -> one line on stderr, exit 2), resolved at call time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from cli.main import user_errors as handle

        return handle(fn)(*args, **kwargs)

    return wrapper


def _parse_cfg(text: str) -> list[float]:
    """'1,3,9' -> [1.0, 3.0, 9.0], each in 0-100."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError("--cfg", f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise UserError("--cfg", f"{text!r}: give one or more values in 0-100")
    return values


@user_errors
def train_judge_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    preset: str = typer.Option("demo", "--preset", help="demo (CPU, minutes) or article (GPU)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the preset's epochs."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="Override any judge config field: --set widths=[16,32,64]."),
    limit: Optional[int] = typer.Option(None, "--limit", min=16, help="Use only the first N training images."),
) -> None:
    """Train the morphology judge on the training split and register it as galaxy-judge."""
    from cli.main import parse_settings
    from tasks.judge import train_judge_run

    ref = train_judge_run(data, preset, epochs=epochs, overrides=parse_settings(settings), limit=limit)
    m = ref.metrics
    typer.echo(f"run {ref.run_id}: test accuracy {m['test_accuracy']:.3f} (train {m['train_accuracy']:.3f}, best val {m['best_val_acc']:.3f})")
    typer.echo(f"model {ref.model_uri} (newest: models:/galaxy-judge/latest, best: {JUDGE_URI})")


@user_errors
def evaluate_cmd(
    model: str = typer.Option(SAMPLER_URI, "--model", help="Registered sampler URI."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder (its test split is the real reference)."),
    judge: str = typer.Option(JUDGE_URI, "--judge", help="Registered judge URI (train one with `galaxy train judge`)."),
    per_class: int = typer.Option(50, "--per-class", help="Generated images per class and cfg_scale (2 or more)."),
    cfg: str = typer.Option("1,3,9", "--cfg", help="cfg_scale values of the accuracy curve."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first N images of each real split."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the samples and the floor's training subset."),
) -> None:
    """Judge a sampler: class-conditional accuracy against cfg_scale and Fréchet distances, logged to MLflow."""
    if per_class < 2:
        raise UserError("--per-class", f"{per_class} is too few: a Fréchet distance needs at least 2 images per class")
    cfg_values = _parse_cfg(cfg)
    if not data.is_dir():
        raise UserError(data, "no such prepared dataset folder (run `galaxy data prepare` first)")
    from tasks.judge import evaluate_run

    result = evaluate_run(model, data, judge_uri=judge, cfg_values=cfg_values, per_class=per_class, limit=limit, seed=seed)
    typer.echo(f"run {result['run_id']} (experiment galaxy-evaluate): figures under evaluate/")
    typer.echo(result["summary"])
    if result["notes"]:
        typer.echo(f"note: {len(result['notes'])} per-class Fréchet distances skipped (too few images), see evaluate/notes.txt")
