"""`galaxy atlas` and `galaxy sample`: explore a VQ-VAE's codebook, and sample galaxies from a registered sampler."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from cli.common import parse_classes, user_errors
from model.errors import UserError

TOP_P = 0.9  # model.sampling.DEFAULT_TOP_P (not imported here: it pulls in torch before the arguments are checked)


@user_errors
def atlas_cmd(
    vqvae: str = typer.Option("models:/galaxy-vqvae@champion", "--vqvae", help="Registered VQ-VAE URI."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    codes: str = typer.Option("", "--codes", help="Extra code indices for the per-code panels, e.g. 1,2,3."),
    limit: Optional[int] = typer.Option(None, "--limit", min=10, help="Use only the first N images."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The codebook atlas (code usage, heads and tails, single codes, t-SNE, random codes) as an MLflow run."""
    try:
        chosen = [int(c) for c in codes.split(",") if c.strip()]
    except ValueError:
        raise UserError("--codes", f"{codes!r} is not a comma-separated list of integers") from None
    from tasks.atlas import atlas_run  # after the arguments are checked: a typo fails in a second

    result = atlas_run(vqvae, data, codes=chosen, limit=limit, seed=seed)
    m = result["metrics"]
    typer.echo(
        f"run {result['run_id']}: utilisation {m['utilisation']:.1%}, perplexity {m['perplexity']:.1f} "
        f"({m['effective_usage']:.1%} of K), 5-NN accuracy {m['knn_accuracy']:.3f} (chance {m['knn_chance']:.3f}), "
        f"NMI {m['nmi']:.3f} (chance {m['nmi_chance']:.3f}); figures under atlas/"
    )


def parse_redshifts(text: str) -> list[float]:
    """'0.02,0.05,0.1' -> [0.02, 0.05, 0.1]; 'none' is no redshift (NaN); anything else not a finite number fails."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lower() == "none":
            out.append(float("nan"))
            continue
        try:
            value = float(item)
        except ValueError:
            raise UserError("--redshift", f"{item!r} is not a number") from None
        if not math.isfinite(value):
            raise UserError("--redshift", f"{item!r} is not a finite number (use 'none' for no redshift)")
        out.append(value)
    if not out:
        raise UserError("--redshift", "no redshift given")
    return out


@user_errors
def sample_cmd(
    model: str = typer.Option("models:/galaxy-sampler@champion", "--model", help="Registered sampler URI."),
    classes: str = typer.Option(
        "0,1,2,3,4,5,6,7,8,9", "--classes", help="Comma-separated class ids or names; 'none' = unconditional."
    ),
    n: int = typer.Option(8, "--n", help="Images per class."),
    cfg: float = typer.Option(3.0, "--cfg", help="Classifier-free guidance scale (0-100; 1 = purely conditional)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature (0 < T <= 10)."),
    top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely codes (0 = off)."),
    top_p: float = typer.Option(TOP_P, "--top-p", help="Nucleus sampling mass in (0, 1] (1 = off)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    redshift: Optional[str] = typer.Option(
        None, "--redshift", help="Comma-separated redshifts (prior trained with --condition redshift): class x z grid."
    ),
    out: Path = typer.Option(..., "--out", help="PNG file for the labelled grid."),
) -> None:
    """Generate galaxies with a registered sampler and write a labelled grid (one row per class, n images per
    redshift when --redshift is given)."""
    labels = parse_classes(classes)
    zs = parse_redshifts(redshift) if redshift is not None else [float("nan")]
    if not 1 <= n <= 1024:
        raise UserError("--n", f"{n} is outside 1-1024")
    if not 0 <= cfg <= 100:
        raise UserError("--cfg", f"{cfg} is outside 0-100")
    if not 0 < temperature <= 10:
        raise UserError("--temperature", f"{temperature} is outside (0, 10]")
    if top_k < 0:
        raise UserError("--top-k", f"{top_k} is negative")
    if not 0 < top_p <= 1:
        raise UserError("--top-p", f"{top_p} is outside (0, 1]")
    if out.suffix.lower() != ".png":
        raise UserError(out, "the grid is written as PNG: give a .png file name")
    if not out.parent.exists():
        raise UserError(out.parent, "output folder does not exist")

    from model.galaxy10 import CLASS_NAMES
    from model.plotting import save_figure
    from model.plotting.grids import labelled_grid_figure
    from model.sampling import check_condition_values, sample
    from model.utils import pick_device
    from tasks.progress import bar
    from tasks.registry import load_sampler

    prior, vqvae = load_sampler(model)
    if redshift is not None:
        if prior.config.condition not in (None, "redshift"):
            raise UserError("--redshift", f"this sampler's prior is conditioned on {prior.config.condition!r}")
        check_condition_values(prior, zs, where="--redshift")
    device = pick_device()
    prior.to(device), vqvae.to(device)
    requested = [c for c in labels for _ in zs for _ in range(n)]  # rows: class, then redshift, then n images
    values = [z for _ in labels for z in zs for _ in range(n)]
    conditional = [c >= 0 or z == z for c, z in zip(requested, values)]  # z == z: not NaN
    batches = sum(1 for cond in (True, False) if cond in conditional)  # ≤ 256 images each
    batches = max(batches, (len(requested) + 255) // 256)
    with bar(total=prior.seq_len * batches, desc="sampling tokens", unit="tok") as pbar:
        s = sample(
            prior,
            vqvae,
            requested,
            condition_values=values if redshift is not None else None,
            cfg_scale=cfg,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            progress=lambda k: pbar.update(k - pbar.n),
        )
    per_row = n * len(zs)
    rows = [s.images[i * per_row : (i + 1) * per_row] for i in range(len(labels))]
    names = [f"{c}: {CLASS_NAMES[c]}" if c >= 0 else "unconditional" for c in labels]
    title = f"{model}: cfg {cfg:g}, temperature {temperature:g}, top-k {top_k}, top-p {top_p:g}, seed {seed}"
    cols = None
    if redshift is not None:
        names = [name if name != "unconditional" else "any class" for name in names]
        cols = [f"z = {z:g}" if j == 0 else "" for z in zs for j in range(n)]
        title += f"; columns: redshift ({n} per value)"
    save_figure(labelled_grid_figure(rows, names, title, col_labels=cols), out)
    typer.echo(f"wrote {out} ({len(requested)} images)")
