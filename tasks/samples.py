"""Samples stage (SPEC P4): the sampling grids of a registered sampler, logged under ``samples/`` in its run.

Unconditional; per class at cfg 1, 3, 9, 100; top-k 5; top-p 0.8; a temperature sweep; t-SNE of
generated latents coloured by the requested class. A prior conditioned on a numeric property (redshift)
adds a class x value grid: 4 values spanning its trained range, every class and a row with the value alone.
Grids without a top-k or top-p of their own are drawn at the sampler's default nucleus mass
(``model.sampling.DEFAULT_TOP_P``, what the evaluation scores), named in their titles.
"""

from __future__ import annotations

import mlflow
import numpy as np
from prefect import task

from model.embedding import embed_tsne
from model.galaxy10 import CLASS_NAMES, NUM_CLASSES
from model.plotting.atlas import atlas_figure
from model.plotting.grids import labelled_grid_figure
from model.sampling import DEFAULT_TOP_P, sample
from model.utils import pick_device
from tasks import registry, tracking
from tasks.progress import bar
from tasks.retry import retry_on_io

GRID_CFG = (1.0, 3.0, 9.0, 100.0)
GRID_TEMPERATURES = (0.5, 0.7, 1.0, 1.2, 1.5, 2.0, 3.0)
PER_CLASS = 6  # images per class row
TSNE_PER_CLASS = 30
CONDITION_STEPS = 4  # values across the trained range in the class x value grid
PER_CELL = 2  # images per (class, value) cell


def class_rows(images: np.ndarray, per_row: int) -> list[np.ndarray]:
    """(K * per_row, S, S, 3) images -> K rows of per_row images."""
    return [images[i * per_row : (i + 1) * per_row] for i in range(len(images) // per_row)]


def condition_grid(prior, vqvae, seed: int):
    """The class x value grid of a conditioned prior (cfg_scale 3) as a figure; its rows are the classes and
    the value alone (null class), its columns ``CONDITION_STEPS`` values from the trained range's ends."""
    name, (lo, hi) = prior.config.condition, prior.config.condition_range
    values = np.linspace(lo, hi, CONDITION_STEPS)
    classes = list(range(NUM_CLASSES)) + [-1]
    labels = np.repeat(classes, CONDITION_STEPS * PER_CELL)  # rows: class, then value, then PER_CELL images
    requested = np.tile(np.repeat(values, PER_CELL), len(classes))
    s = sample(prior, vqvae, labels, condition_values=requested, cfg_scale=3.0, seed=seed)
    rows = class_rows(s.images, CONDITION_STEPS * PER_CELL)
    names = [f"{c}: {n}" for c, n in enumerate(CLASS_NAMES)] + [f"any class ({name} only)"]
    short = "z" if name == "redshift" else name
    cols = [f"{short} = {v:.3g}" if j == 0 else "" for v in values for j in range(PER_CELL)]
    title = (
        f"Class x {name} (cfg_scale 3, top-p {DEFAULT_TOP_P:g}; last row guided on {name} alone), "
        f"trained range [{lo:.3g}, {hi:.3g}]"
    )
    return labelled_grid_figure(rows, names, title, col_labels=cols)


def log_sampling_grids(run_id: str, sampler_uri: str, seed: int = 0) -> None:
    """Log every P4 grid under samples/ in the prior's run."""
    tracking.setup()
    prior, vqvae = registry.load_sampler(sampler_uri)
    device = pick_device()
    prior.to(device), vqvae.to(device)
    names = [f"{c}: {n}" for c, n in enumerate(CLASS_NAMES)]
    per_class = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)

    def by_class(settings: dict, title: str, artifact: str) -> None:
        s = sample(prior, vqvae, per_class, seed=seed, **settings)
        tracking.log_figure(labelled_grid_figure(class_rows(s.images, PER_CLASS), names, title), artifact)

    with mlflow.start_run(run_id=run_id), bar(total=None, desc="sampling grids", unit="grid") as pbar:
        s = sample(prior, vqvae, [-1] * 16, seed=seed)
        title = f"Unconditional samples (top-p {DEFAULT_TOP_P:g})"
        figure = labelled_grid_figure([s.images[:8], s.images[8:]], ["", ""], title)
        tracking.log_figure(figure, "samples/unconditional.png")
        pbar.update()
        # every grid of one kind in one pass (a step costs about the same for 60 rows as for 240)
        s = sample(
            prior, vqvae, np.tile(per_class, len(GRID_CFG)), cfg_scale=np.repeat(GRID_CFG, len(per_class)), seed=seed
        )
        for cfg, images in zip(GRID_CFG, np.split(s.images, len(GRID_CFG))):
            title = f"Conditional samples, cfg_scale {cfg:g}, top-p {DEFAULT_TOP_P:g}"
            tracking.log_figure(
                labelled_grid_figure(class_rows(images, PER_CLASS), names, title), f"samples/cfg_{cfg:g}.png"
            )
            pbar.update()
        by_class({"cfg_scale": 3.0, "top_k": 5, "top_p": 1.0}, "Top-k 5 (cfg_scale 3)", "samples/top_k_5.png")
        by_class({"cfg_scale": 3.0, "top_p": 0.8}, "Top-p 0.8 (cfg_scale 3)", "samples/top_p_0.8.png")
        pbar.update(2)
        classes = np.arange(NUM_CLASSES)
        temperatures = np.repeat(GRID_TEMPERATURES, len(classes))
        s = sample(
            prior, vqvae, np.tile(classes, len(GRID_TEMPERATURES)), cfg_scale=3.0, temperature=temperatures, seed=seed
        )
        rows = np.split(s.images, len(GRID_TEMPERATURES))
        labels = [f"T = {t:g}" for t in GRID_TEMPERATURES]
        title = f"Temperature sweep (cfg_scale 3, top-p {DEFAULT_TOP_P:g})"
        figure = labelled_grid_figure(rows, labels, title, col_labels=list(CLASS_NAMES))
        tracking.log_figure(figure, "samples/temperature_sweep.png")
        pbar.update()
        requested = np.repeat(classes, TSNE_PER_CLASS)
        s = sample(prior, vqvae, requested, cfg_scale=3.0, seed=seed + 1)
        perplexity = min(50.0, (len(requested) - 1) / 3)
        embedding = embed_tsne(s.latents.reshape(len(s.latents), -1), perplexity=perplexity, seed=seed)
        title = f"t-SNE of generated latents, coloured by requested class (cfg_scale 3, top-p {DEFAULT_TOP_P:g})"
        tracking.log_figure(atlas_figure(embedding, requested, CLASS_NAMES, title), "samples/tsne_generated.png")
        pbar.update()
        if prior.config.condition is not None:
            figure = condition_grid(prior, vqvae, seed)
            tracking.log_figure(figure, f"samples/class_by_{prior.config.condition}.png")
            pbar.update()


@task(name="sampling-grids", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def sampling_grids_task(run_id: str, sampler_uri: str, seed: int = 0) -> str:
    """Log the P4 sampling grids into the prior's run; returns the run id."""
    log_sampling_grids(run_id, sampler_uri, seed)
    return run_id
