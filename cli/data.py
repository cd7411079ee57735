"""`galaxy data ...`: synthesize, prepare, inspect, download and compare Galaxy10-format data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import user_errors
from model.errors import UserError
from model.synth_labels import DEFAULT_SYNTH_N

app = typer.Typer(no_args_is_help=True, help="Galaxy10 data: synthesize, prepare, inspect.")


@app.command("synth")
@user_errors
def data_synth(
    out: Path = typer.Option(..., "--out", help="HDF5 file to write (Galaxy10 schema)."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of images."),
    size: int = typer.Option(256, "--size", min=16, max=1024, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same file)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Rendering processes (default: CPU count)."),
) -> None:
    """Render a synthetic Galaxy10-format file with GalSim."""
    if not out.parent.is_dir():  # checked before the heavy imports: a typo fails in a second
        raise UserError(out.parent, "output folder does not exist")
    from tasks.data import synth_file

    path = synth_file(n, size, seed, out=out, workers=workers)
    typer.echo(f"wrote {path} ({n} images, {size} px, seed {seed})")


@app.command("prepare")
@user_errors
def data_prepare(
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    source: str = typer.Option("synthetic", "--source", help="synthetic, h5:PATH or astronn."),
    size: int = typer.Option(128, "--size", help="Image side after resizing."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split (and of the synthetic set)."),
    n: int = typer.Option(
        DEFAULT_SYNTH_N, "--n", min=1, help="Images in the synthetic set (only for --source synthetic)."
    ),
) -> None:
    """Resize, split and store a Galaxy10-format source (cached by content hash)."""
    from model.source import parse_source

    parse_source(source)  # before the heavy imports: a typo fails in a second
    from tasks.data import prepare_dataset

    result = prepare_dataset(source, out, size=size, seed=seed, synthetic_n=n)
    verb = "already prepared, nothing to do" if result.cached else "prepared"
    typer.echo(f"{result.out}: {verb} (key {result.key}, {result.meta['n']} images, {result.meta['size']} px)")


@app.command("info")
@user_errors
def data_info(root: Path = typer.Argument(..., help="A prepared dataset folder.")) -> None:
    """Print image counts per class and split."""
    from model.data import describe, load_prepared

    typer.echo(describe(load_prepared(root)))


@app.command("download")
@user_errors
def data_download(
    out: Path = typer.Option(None, "--out", help="Destination (default: astroNN's cache folder)."),
    url: str = typer.Option(None, "--url", help="Override the download address."),
) -> None:
    """Download the real Galaxy10 DECaLS file (2.54 GB) with a progress bar and SHA256 check."""
    from model import source as S
    from model.galaxy10 import FILE_NAME, FILE_URL
    from tasks.progress import bar

    dest = out or S.astronn_cache_dir() / FILE_NAME
    with bar(total=None, desc=f"downloading {dest.name}", unit="B") as pbar:

        def progress(have: int, total: int | None) -> None:
            pbar.total = total
            pbar.update(have - pbar.n)

        S.download(url or FILE_URL, dest, progress=progress)
    typer.echo(f"wrote {dest} (checksum verified)")


@app.command("realism")
@user_errors
def data_realism(
    real: Path = typer.Option(..., "--real", help="Real Galaxy10-format .h5 file (labels optional)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic Galaxy10-format .h5 file."),
    out: Path = typer.Option(Path("realism"), "--out", help="Folder for realism.json, the CSV tables and figures."),
    limit: int = typer.Option(2000, "--limit", min=10, help="Images measured per file (the first N)."),
    size: int = typer.Option(128, "--size", min=16, max=1024, help="Common side both files are resized to."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsampling and cross-validation folds."),
) -> None:
    """Compare a synthetic file with real images: per-image statistics and a classifier two-sample AUC."""
    from model.source import validate_h5

    for path in (real, synthetic):  # a bad file fails before the report's heavier imports
        validate_h5(path, require_labels=False)
    from tasks.realism import realism_report

    result = realism_report(real, synthetic, out, size=size, limit=limit, seed=seed)
    typer.echo(result.table)
    if result.note:
        typer.echo(f"note: {result.note}")
    typer.echo(f"wrote {result.out}" + (f" (MLflow run {result.run_id} in galaxy-data)" if result.run_id else ""))
    typer.echo(result.last_line)
