"""The `galaxy` command line: data, training, atlas, sampling, sweeps and evaluation.

Every command honours MLFLOW_TRACKING_URI. Problems a user can fix print one line on stderr and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from model.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
data_app = typer.Typer(no_args_is_help=True, help="Galaxy10 data: synthesize, prepare, inspect.")
app.add_typer(data_app, name="data")
train_app = typer.Typer(no_args_is_help=True, help="Train the VQ-VAE, the prior or the judge (logged to MLflow).")
app.add_typer(train_app, name="train")


def user_errors(fn: Callable) -> Callable:
    """Turn UserError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@data_app.command("synth")
@user_errors
def data_synth(
    out: Path = typer.Option(..., "--out", help="HDF5 file to write (Galaxy10 schema)."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of images."),
    size: int = typer.Option(256, "--size", min=16, max=1024, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same file)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Rendering processes (default: CPU count)."),
) -> None:
    """Render a synthetic Galaxy10-format file with GalSim."""
    from tasks.data import synth_file

    path = synth_file(n, size, seed, out=out, workers=workers)
    typer.echo(f"wrote {path} ({n} images, {size} px, seed {seed})")


@data_app.command("prepare")
@user_errors
def data_prepare(
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    source: str = typer.Option("synthetic", "--source", help="synthetic, h5:PATH or astronn."),
    size: int = typer.Option(128, "--size", help="Image side after resizing."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split (and of the synthetic set)."),
    n: int = typer.Option(3000, "--n", min=1, help="Images in the synthetic set (only for --source synthetic)."),
) -> None:
    """Resize, split and store a Galaxy10-format source (cached by content hash)."""
    from tasks.data import prepare_dataset

    result = prepare_dataset(source, out, size=size, seed=seed, synthetic_n=n)
    verb = "already prepared, nothing to do" if result.cached else "prepared"
    typer.echo(f"{result.out}: {verb} (key {result.key}, {result.meta['n']} images, {result.meta['size']} px)")


@data_app.command("info")
@user_errors
def data_info(root: Path = typer.Argument(..., help="A prepared dataset folder.")) -> None:
    """Print image counts per class and split."""
    from model.data import describe, load_prepared

    typer.echo(describe(load_prepared(root)))


@data_app.command("download")
@user_errors
def data_download(
    out: Path = typer.Option(None, "--out", help="Destination (default: astroNN's cache folder)."),
    url: str = typer.Option(None, "--url", help="Override the download address."),
) -> None:
    """Download the real Galaxy10 DECaLS file (2.54 GB) with a progress bar and SHA256 check."""
    from model import data as D
    from model.galaxy10 import FILE_NAME, FILE_URL
    from tasks.progress import bar

    dest = out or D.astronn_cache_dir() / FILE_NAME
    with bar(total=None, desc=f"downloading {dest.name}", unit="B") as pbar:

        def progress(have: int, total: int | None) -> None:
            pbar.total = total
            pbar.update(have - pbar.n)

        D.download(url or FILE_URL, dest, progress=progress)
    typer.echo(f"wrote {dest} (checksum verified)")


def parse_settings(items: list[str] | None) -> dict:
    """--set key=value pairs -> dict with values parsed as JSON where possible (numbers, booleans, lists)."""
    import json

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError("--set", f"{item!r} is not key=value")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


@train_app.command("vqvae")
@user_errors
def train_vqvae_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    preset: str = typer.Option("demo", "--preset", help="demo (CPU, minutes) or article (GPU, 500 epochs)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the preset's epochs."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="Override any config field: --set codebook_size=512."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore a checkpoint left by an interrupted run."),
) -> None:
    """Train a VQ-VAE, log it to MLflow and register it as galaxy-vqvae."""
    from tasks.vqvae import train_vqvae_run

    ref = train_vqvae_run(data, preset, epochs=epochs, overrides=parse_settings(settings), resume=not fresh)
    m = ref.metrics
    typer.echo(f"run {ref.run_id}: val PSNR {m['final_val_psnr']:.2f} dB, utilisation {m['final_val_utilisation']:.1%}, perplexity {m['final_val_perplexity']:.1f}")
    typer.echo(f"model {ref.model_uri} (newest: models:/galaxy-vqvae/latest, best: models:/galaxy-vqvae@champion)")


@train_app.command("prior")
@user_errors
def train_prior_cmd(
    vqvae: str = typer.Option(..., "--vqvae", help="Registered VQ-VAE, e.g. models:/galaxy-vqvae@champion."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    preset: str = typer.Option("demo", "--preset", help="demo (CPU, minutes) or article (GPU)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the preset's epochs."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="Override any prior config field: --set layers=4."),
    grids: bool = typer.Option(True, "--grids/--no-grids", help="Log the sampling grids when training ends."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore a checkpoint left by an interrupted run."),
) -> None:
    """Train the class-conditional prior on the VQ-VAE's codes and register galaxy-sampler."""
    from tasks.prior import train_prior_run

    ref = train_prior_run(vqvae, data, preset, epochs=epochs, overrides=parse_settings(settings), grids=grids, resume=not fresh)
    m = ref.metrics
    typer.echo(
        f"run {ref.run_id}: val {m.get('val_bits_per_token', float('nan')):.3f} bits/token "
        f"(unigram entropy {m.get('unigram_bits_per_token', float('nan')):.3f})"
    )
    typer.echo(f"model {ref.model_uri} (newest: models:/galaxy-sampler/latest, best: models:/galaxy-sampler@champion)")


@app.command("atlas")
@user_errors
def atlas_cmd(
    vqvae: str = typer.Option("models:/galaxy-vqvae@champion", "--vqvae", help="Registered VQ-VAE URI."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    codes: str = typer.Option("", "--codes", help="Extra code indices for the per-code panels, e.g. 1,2,3."),
    limit: Optional[int] = typer.Option(None, "--limit", min=10, help="Use only the first N images."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The codebook atlas (code usage, heads and tails, single codes, t-SNE, random codes) as an MLflow run."""
    from tasks.atlas import atlas_run

    try:
        chosen = [int(c) for c in codes.split(",") if c.strip()]
    except ValueError:
        raise UserError("--codes", f"{codes!r} is not a comma-separated list of integers") from None
    result = atlas_run(vqvae, data, codes=chosen, limit=limit, seed=seed)
    m = result["metrics"]
    typer.echo(
        f"run {result['run_id']}: utilisation {m['utilisation']:.1%}, perplexity {m['perplexity']:.1f} "
        f"({m['effective_usage']:.1%} of K), 5-NN accuracy {m['knn_accuracy']:.3f} (chance {m['knn_chance']:.3f}), "
        f"NMI {m['nmi']:.3f} (chance {m['nmi_chance']:.3f}); figures under atlas/"
    )


@app.command("sweep")
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
    result = run_sweep(data, trials, workers, storage=storage, preset_name=preset, epochs=epochs, seed=seed,
                       study_name=study, overrides=parse_settings(settings))
    typer.echo(f"study {result.study_name}: best val MSE {result.best_value:.5f} with {result.best_params}")
    typer.echo(f"parent run {result.parent_run_id}; best model {result.model_uri}")


@app.command("sweep-worker", hidden=True)
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


def parse_classes(text: str) -> list[int]:
    """'5,6,7' or class names ('barred spiral') -> class ids; 'none' or -1 means unconditional."""
    from model.galaxy10 import CLASS_NAMES

    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lower() in ("none", "-1", "uncond", "unconditional"):
            out.append(-1)
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(CLASS_NAMES):
            out.append(int(item))
        elif item.lower() in CLASS_NAMES:
            out.append(CLASS_NAMES.index(item.lower()))
        else:
            raise UserError("--classes", f"unknown class {item!r}: use 0-{len(CLASS_NAMES) - 1}, a class name, or none")
    if not out:
        raise UserError("--classes", "no class given")
    return out


@app.command("sample")
@user_errors
def sample_cmd(
    model: str = typer.Option("models:/galaxy-sampler@champion", "--model", help="Registered sampler URI."),
    classes: str = typer.Option("0,1,2,3,4,5,6,7,8,9", "--classes", help="Comma-separated class ids or names; 'none' = unconditional."),
    n: int = typer.Option(8, "--n", help="Images per class."),
    cfg: float = typer.Option(3.0, "--cfg", help="Classifier-free guidance scale (0-100; 1 = purely conditional)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature (0 < T <= 10)."),
    top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely codes (0 = off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass in (0, 1] (1 = off)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Path = typer.Option(..., "--out", help="PNG file for the labelled grid."),
) -> None:
    """Generate galaxies with a registered sampler and write a labelled grid (one row per class)."""
    labels = parse_classes(classes)
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

    from model.atlas import labelled_grid_figure, save_figure
    from model.galaxy10 import CLASS_NAMES
    from tasks.prior import load_sampler
    from tasks.progress import bar

    from model.sampling import sample
    from model.utils import pick_device

    prior, vqvae = load_sampler(model)
    device = pick_device()
    prior.to(device), vqvae.to(device)
    requested = [c for c in labels for _ in range(n)]
    batches = sum(1 for cond in (True, False) if any((c >= 0) == cond for c in requested))  # ≤ 256 images each
    batches = max(batches, (len(requested) + 255) // 256)
    with bar(total=prior.seq_len * batches, desc="sampling tokens", unit="tok") as pbar:
        s = sample(prior, vqvae, requested, cfg_scale=cfg, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                   progress=lambda k: pbar.update(k - pbar.n))
    rows = [s.images[i * n : (i + 1) * n] for i in range(len(labels))]
    names = [f"{c}: {CLASS_NAMES[c]}" if c >= 0 else "unconditional" for c in labels]
    title = f"{model}: cfg {cfg:g}, temperature {temperature:g}, top-k {top_k}, top-p {top_p:g}, seed {seed}"
    save_figure(labelled_grid_figure(rows, names, title), out)
    typer.echo(f"wrote {out} ({len(requested)} images)")




# E1 commands live in cli/evaluate.py
from cli.evaluate import evaluate_cmd, train_judge_cmd  # noqa: E402

train_app.command("judge")(train_judge_cmd)
app.command("evaluate")(evaluate_cmd)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
