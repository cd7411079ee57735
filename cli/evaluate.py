"""`galaxy evaluate`: judge a sampler's samples against real images (SPEC E1)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import user_errors
from model.errors import UserError

SAMPLER_URI = "models:/galaxy-sampler@champion"  # tasks.evaluate's defaults (not imported: it pulls in mlflow)
JUDGE_URI = "models:/galaxy-judge@champion"
TOP_P = 0.9  # model.sampling.DEFAULT_TOP_P, the sampler's default


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
def evaluate_cmd(
    model: str = typer.Option(SAMPLER_URI, "--model", help="Registered sampler URI."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder (its test split is the real reference)."),
    judge: str = typer.Option(JUDGE_URI, "--judge", help="Registered judge URI (train one with `galaxy train judge`)."),
    per_class: int = typer.Option(50, "--per-class", help="Generated images per class and cfg_scale (2 or more)."),
    cfg: str = typer.Option("1,3,9", "--cfg", help="cfg_scale values of the accuracy curve."),
    top_p: float = typer.Option(TOP_P, "--top-p", help="Nucleus sampling mass of the samples in (0, 1] (1 = off)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first N images of each real split."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the samples and the floor's training subset."),
) -> None:
    """Judge a sampler: class-balanced accuracy against cfg_scale and Fréchet distances, with 95 % intervals."""
    if per_class < 2:
        raise UserError("--per-class", f"{per_class} is too few: a Fréchet distance needs at least 2 images per class")
    cfg_values = _parse_cfg(cfg)
    if not 0 < top_p <= 1:
        raise UserError("--top-p", f"{top_p} is outside (0, 1]")
    if not data.is_dir():
        raise UserError(data, "no such prepared dataset folder (run `galaxy data prepare` first)")
    from tasks.evaluate import evaluate_run

    result = evaluate_run(
        model, data, judge_uri=judge, cfg_values=cfg_values, per_class=per_class, top_p=top_p, limit=limit, seed=seed
    )
    typer.echo(f"run {result['run_id']} (experiment galaxy-evaluate): figures under evaluate/")
    typer.echo(result["summary"])
    if result["notes"]:
        typer.echo(f"note: {len(result['notes'])} notes on skipped Fréchet distances, see evaluate/notes.txt")
    if result["promoted"]:
        typer.echo(f"{model} is now galaxy-sampler@champion: the judge rates its samples above the champion's")
