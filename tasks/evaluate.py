"""Evaluate stage (SPEC E1): score a registered sampler with the registered judge, in one MLflow run.

``evaluate_run`` asks the sampler for ``per_class`` images of every class at each cfg_scale and measures, in one
run of the experiment "galaxy-evaluate", what ``model.evaluation`` describes: class-balanced accuracy of the
samples against cfg_scale beside the judge on real test images and on their VQ-VAE reconstructions, and the Fréchet
distance of the samples to the test split beside a floor (real training images) and a ceiling (reconstructions of
other training images), with as many images per class in each, and a bootstrap 95 % interval on every headline.

The result is also written on the sampler's own run (``eval_`` + the name), where the champion rule across
tokenizers reads it (``tasks.registry.promote_sampler_by_samples``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import get_model_info
from prefect import task

from model.bootstrap import REPLICATES
from model.data import load_prepared
from model.errors import UserError
from model.evaluation import (
    CEILING,
    FLOOR,
    REAL_ACC,
    RECON_ACC,
    Scores,
    Verdicts,
    acc_name,
    cfg_tag,
    fd_name,
    headline_names,
    plan,
    redshift_summary,
    score,
    summary_rows,
    summary_text,
)
from model.galaxy10 import CLASS_NAMES
from model.judge import predict
from model.metrics import classification_report
from model.plotting.evaluation import accuracy_curve_figure, confusion_figure, frechet_bars_figure
from model.plotting.grids import metrics_table_figure
from model.plotting.redshift import redshift_recovery_figure
from model.redshift import RedshiftRegressor, requested_redshifts, rho_by_class
from model.sampling import DEFAULT_TOP_P, sample
from model.train_vqvae import reconstruct_images
from model.utils import pick_device
from tasks import registry, tracking
from tasks.progress import bar
from tasks.retry import retry_on_io

EXPERIMENT = "galaxy-evaluate"
JUDGE_URI = f"models:/{registry.JUDGE_MODEL}@{registry.CHAMPION}"
SAMPLER_URI = f"models:/{registry.SAMPLER_MODEL}@{registry.CHAMPION}"
CFG_VALUES = (1.0, 3.0, 9.0)  # cfg_scale values of the class-conditional accuracy curve
FD_CFG = 3.0  # the cfg_scale whose samples are compared with real images
PER_CLASS = 50  # generated images per class and cfg_scale
Z_PER_CLASS = 20  # images per class asked for a redshift (a prior conditioned on it), and as many without one


def check_settings(
    per_class: int, cfg_values: Sequence[float], fd_cfg: float, top_p: float = DEFAULT_TOP_P
) -> list[float]:
    """The cfg values as floats; a UserError for settings no evaluation can use."""
    if per_class < 2:
        raise UserError("--per-class", f"{per_class} is too few: a Fréchet distance needs at least 2 images per class")
    cfg_values = [float(c) for c in cfg_values]
    if not cfg_values or any(not 0 <= c <= 100 for c in cfg_values):
        raise UserError("cfg_values", f"{cfg_values} must be a non-empty list of values in 0-100")
    if not 0 <= fd_cfg <= 100:
        raise UserError("fd_cfg", f"{fd_cfg} is outside 0-100")
    if not 0 < top_p <= 1:
        raise UserError("--top-p", f"{top_p} is outside (0, 1]")
    return cfg_values


def evaluate_run(
    sampler_uri: str,
    data_dir: str | Path,
    *,
    judge_uri: str = JUDGE_URI,
    cfg_values: Sequence[float] = CFG_VALUES,
    per_class: int = PER_CLASS,
    fd_cfg: float = FD_CFG,
    top_p: float = DEFAULT_TOP_P,
    limit: int | None = None,
    seed: int = 0,
    replicates: int = REPLICATES,
) -> dict[str, Any]:
    """Judge a sampler's class-conditional samples (drawn at nucleus mass ``top_p``, the sampler's default)
    against real images.

    Returns {run_id, metrics (headline numbers with _lo / _hi), all_metrics, notes, summary, promoted}."""
    cfg_values = check_settings(per_class, cfg_values, fd_cfg, top_p)
    tracking.setup()
    data = load_prepared(data_dir)
    prior, vqvae = registry.load_sampler(sampler_uri)
    judge, _ = registry.load_judge(judge_uri)
    k, size = judge.config.num_classes, data.meta["size"]
    if judge.config.image_size != size or vqvae.config.image_size != size:
        sizes = f"the sampler makes {vqvae.config.image_size} px and the judge expects {judge.config.image_size} px"
        raise UserError(data_dir, f"images are {size} px, {sizes}")
    if prior.num_classes != k:
        raise UserError(sampler_uri, f"the sampler knows {prior.num_classes} classes but the judge {k}")
    device = pick_device()
    prior.to(device), vqvae.to(device), judge.to(device)

    test_x, test_y = data.subset("test", limit)
    if len(test_x) < 2:
        raise UserError(data_dir, f"the test split holds {len(test_x)} images: too few to compare with")
    train_rows = data.indices("train")[:limit]
    chosen = plan(data.labels[train_rows], k, per_class, seed)
    rows = {name: train_rows[getattr(chosen, f"{name}_rows")] for name in ("floor", "ceiling", "pca")}  # dataset rows
    images = {name: np.asarray(data.images[r]) for name, r in rows.items()}  # only these training images are read
    labels = {name: data.labels[r].astype(np.int64) for name, r in rows.items()}
    requested = np.repeat(np.arange(k), per_class)  # (N,) the class asked for, per_class of each
    sweep = list(dict.fromkeys([*cfg_values, fd_cfg]))  # fd_cfg sampled once even when it is on the curve
    names = list(CLASS_NAMES[:k])

    def judged(images: np.ndarray, labels: np.ndarray) -> Verdicts:
        return Verdicts(*predict(judge, images), labels)

    tags = tracking.base_tags(data.meta, device.type, stage="evaluate", sampler_uri=sampler_uri, judge_uri=judge_uri)
    with tracking.run(EXPERIMENT, tracking.run_name("evaluate", data.meta), tags) as active:
        mlflow.log_params(
            {
                "sampler_uri": sampler_uri,
                "judge_uri": judge_uri,
                "sampler_run_id": get_model_info(sampler_uri).run_id,
                "judge_run_id": get_model_info(judge_uri).run_id,
                "data_dir": str(data.root),
                "data_key": data.key,
                "cfg_values": ",".join(map(cfg_tag, cfg_values)),
                "fd_cfg": cfg_tag(fd_cfg),
                "top_p": top_p,
                "per_class": per_class,
                "limit": limit,
                "seed": seed,
                "n_test": len(test_x),
                "n_floor": len(rows["floor"]),
                "n_ceiling": len(rows["ceiling"]),
                "n_pca_fit": len(rows["pca"]),
                "accuracy": "class-balanced (mean per-class recall)",
                "fd_weighting": "class-balanced",
                "bootstrap": f"{replicates} stratified replicates, 95% percentile intervals",
            }
        )
        for name, r in rows.items():
            tracking.log_array(r, f"evaluate/{name}_rows.npy")
        tracking.log_array(data.indices("test")[:limit], "evaluate/test_rows.npy")
        test = judged(test_x, test_y)
        recon_test = judged(reconstruct_images(vqvae, test_x, device=device), test_y)
        floor = judged(images["floor"], labels["floor"])
        ceiling = judged(reconstruct_images(vqvae, images["ceiling"], device=device), labels["ceiling"])
        pca_features = predict(judge, images["pca"])[1] if len(images["pca"]) else np.zeros((0, 1))
        steps = -(-len(requested) // 256) * prior.seq_len  # token steps per cfg_scale
        generated: dict[float, Verdicts] = {}
        class_only = np.zeros((0,))  # the fd_cfg samples, asked for a class and no redshift
        with bar(total=len(sweep) * steps, desc="sampling for evaluation", unit="tok") as pbar:
            for i, cfg in enumerate(sweep):
                progress = lambda n, base=i * steps: pbar.update(base + n - pbar.n)  # noqa: E731
                drawn = sample(prior, vqvae, requested, cfg_scale=cfg, top_p=top_p, seed=seed, progress=progress)
                samples = drawn.images
                generated[cfg] = judged(samples, requested)
                class_only = samples if cfg == fd_cfg else class_only
                tracking.log_array(generated[cfg].probs.argmax(1), f"evaluate/predictions_cfg{cfg_tag(cfg)}.npy")
        scores = score(
            test, recon_test, floor, ceiling, generated, pca_features, cfg_values, fd_cfg, names, replicates, seed
        )
        if prior.config.condition == "redshift":
            tests = (test_x, test_y)
            scores.metrics.update(
                redshift_evaluation(prior, vqvae, data, limit, tests, class_only, per_class, fd_cfg, top_p, seed)
            )
        mlflow.log_metrics({key: v for key, v in scores.metrics.items() if np.isfinite(v)})
        log_figures(scores, test, recon_test, generated[fd_cfg], cfg_values, fd_cfg, top_p, names)
        summary = f"samples at top-p {top_p:g}: " + summary_text(scores.metrics, cfg_values, fd_cfg, k)
        if "z_rho_real_test" in scores.metrics:
            summary += "\n" + redshift_summary(scores.metrics, fd_cfg)
        as_json = {key: (v if math.isfinite(v) else None) for key, v in scores.metrics.items()}  # NaN is not JSON
        record = {
            "sampler_uri": sampler_uri,
            "judge_uri": judge_uri,
            "metrics": as_json,
            "notes": scores.notes,
            "summary": summary,
        }
        mlflow.log_dict(record, "evaluate/summary.json")
        if scores.notes:
            mlflow.log_text("\n".join(scores.notes) + "\n", "evaluate/notes.txt")
            mlflow.set_tag("notes", "some Fréchet distances skipped or approximated (see evaluate/notes.txt)")
    names = headline_names(cfg_values, fd_cfg) + [n for n in redshift_names(fd_cfg) if n in scores.metrics]
    keys = [name for n in names for name in (n, f"{n}_lo", f"{n}_hi")]
    headline = {key: scores.metrics[key] for key in keys}
    recorded = {f"eval_{k}": v for k, v in headline.items() if math.isfinite(v)}
    registry.record_sample_scores(sampler_uri, {**recorded, registry.EVAL_TOP_P: top_p})
    by = acc_name(fd_cfg)
    promoted = registry.promote_sampler_by_samples(sampler_uri, f"eval_{by}", scores.metrics[by], top_p)
    return {
        "run_id": active.info.run_id,
        "metrics": headline,
        "all_metrics": scores.metrics,
        "notes": scores.notes,
        "summary": summary,
        "promoted": promoted,
    }


def redshift_names(fd_cfg: float) -> list[str]:
    """Headline names of the redshift part: samples asked for z, the ceiling (real test images), the floor."""
    return [f"z_rho_cfg{cfg_tag(fd_cfg)}", "z_rho_real_test", "z_rho_floor_no_z"]


def redshift_evaluation(
    prior,
    vqvae,
    data,
    limit: int | None,
    tests: tuple[np.ndarray, np.ndarray],
    class_only: np.ndarray,
    per_class: int,
    fd_cfg: float,
    top_p: float,
    seed: int,
) -> dict[str, float]:
    """Do samples asked for a redshift look it? Spearman rho between the redshift asked for and the one a regressor
    (``model.redshift``, fitted on the training images of known z) reads back, over all classes and per class, with
    intervals: for samples asked for (class, z) at fd_cfg; on real test images against their catalogue z (the
    ceiling); on the class-only samples at fd_cfg against the same asked z (the floor, about 0). Logs the figure."""
    k, n = prior.num_classes, min(Z_PER_CLASS, per_class)
    train_rows, test_rows = data.indices("train")[:limit], data.indices("test")[:limit]
    regressor = RedshiftRegressor(seed).fit(np.asarray(data.images[train_rows]), data.redshift[train_rows])
    (test_x, test_y), test_z = tests, data.redshift[test_rows]  # the test images evaluate_run has read already
    classes = list(range(k))
    lo, hi = prior.config.condition_range
    asked = np.clip(requested_redshifts(data.redshift[train_rows], data.labels[train_rows], classes, n, seed), lo, hi)
    labels = np.repeat(np.arange(k), n)  # (k * n,)
    images = sample(prior, vqvae, labels, condition_values=asked, cfg_scale=fd_cfg, top_p=top_p, seed=seed + 1).images
    floor_rows = (np.arange(k)[:, None] * per_class + np.arange(n)[None, :]).ravel()  # first n of each class
    parts = {
        f"z_rho_cfg{cfg_tag(fd_cfg)}": (f"samples asked for (class, z), cfg {fd_cfg:g}", asked, images, labels),
        "z_rho_real_test": ("ceiling: real test images, catalogue z", test_z, test_x, test_y),
        "z_rho_floor_no_z": ("floor: samples asked for the class only", asked, class_only[floor_rows], labels),
    }
    metrics, panels, arrays = {}, [], {}
    for name, (title, z, x, y) in parts.items():
        read = regressor.predict(x)
        metrics.update(rho_by_class(z, read, y, classes, name, seed))
        panels.append((title, np.asarray(z, np.float64), read, np.asarray(y), metrics[name]))
        arrays.update({f"{name}_asked": z, f"{name}_read": read, f"{name}_labels": y})
    names = list(CLASS_NAMES[:k])
    tracking.log_figure(redshift_recovery_figure(panels, names), "evaluate/redshift_recovery.png")
    with tempfile.TemporaryDirectory() as tmp:  # every rho can be recomputed from these
        np.savez(Path(tmp) / "redshift_readback.npz", **arrays)
        mlflow.log_artifact(str(Path(tmp) / "redshift_readback.npz"), artifact_path="evaluate")
    return metrics


def log_figures(
    scores: Scores,
    test: Verdicts,
    recon: Verdicts,
    generated: Verdicts,
    cfg_values: Sequence[float],
    fd_cfg: float,
    top_p: float,
    names: Sequence[str],
) -> None:
    """The evaluation's figures and arrays under evaluate/ in the active run."""
    k, m = len(names), scores.metrics

    def band(name: str) -> tuple[float, float, float]:
        return m[name], m[f"{name}_lo"], m[f"{name}_hi"]

    curve = accuracy_curve_figure(
        cfg_values,
        scores.accuracy_per_class,
        scores.accuracy,
        [scores.intervals[acc_name(c)] for c in cfg_values],
        band(REAL_ACC),
        band(RECON_ACC),
        names,
        top_p,
    )
    tracking.log_figure(curve, "evaluate/class_accuracy_vs_cfg.png")
    confusion = classification_report(generated.labels, generated.probs.argmax(1), k)["confusion"]
    title = f"Judge verdicts on samples (cfg {fd_cfg:g}, top-p {top_p:g}), rows: requested class"
    tracking.log_figure(confusion_figure(confusion, names, title), f"evaluate/confusion_cfg{cfg_tag(fd_cfg)}.png")
    confusion = classification_report(recon.labels, recon.probs.argmax(1), k)["confusion"]
    title = "Judge verdicts on VQ-VAE reconstructions of the test split"
    tracking.log_figure(confusion_figure(confusion, names, title), "evaluate/confusion_recon.png")
    legend = {fd_name(fd_cfg): f"generated, cfg {fd_cfg:g}", FLOOR: "floor: real", CEILING: "ceiling: VQ-VAE recon"}
    n = int(m["n_per_class_max"])
    bars = frechet_bars_figure(
        {legend[name]: v for name, v in scores.fd_per_class.items()},
        {legend[name]: v for name, v in scores.fd.items()},
        {legend[name]: scores.intervals[name] for name in scores.fd},
        names,
        f"Fréchet distance to the real test images (judge features, {scores.dims} PCA dims, "
        f"up to {n} images per class in each set)",
    )
    tracking.log_figure(bars, "evaluate/frechet.png")
    rows = summary_rows(scores, cfg_values, fd_cfg, names)
    title = "Evaluation summary: class-balanced judge accuracy and Fréchet distance (FD) to the test split"
    tracking.log_figure(metrics_table_figure(rows, list(rows[0]), title), "evaluate/summary.png")
    tracking.log_array(generated.labels, "evaluate/requested_labels.npy")
    tracking.log_array(test.labels, "evaluate/test_labels.npy")
    with tempfile.TemporaryDirectory() as tmp:  # the reduced features every FD was computed from
        path = Path(tmp) / "fd_space.npz"
        arrays = {f"{key}_{part}": a for key, pair in scores.projected.items() for part, a in zip(("z", "y"), pair)}
        np.savez(path, **arrays)
        mlflow.log_artifact(str(path), artifact_path="evaluate")


@task(name="evaluate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def evaluate_task(
    sampler_uri: str,
    data_dir: str,
    judge_uri: str = JUDGE_URI,
    limit: int | None = None,
    seed: int = 0,
    per_class: int = PER_CLASS,
    top_p: float = DEFAULT_TOP_P,
) -> dict:
    """Judge a registered sampler (balanced accuracy vs cfg, Fréchet distances, intervals); returns {run_id, metrics,
    summary, promoted}."""
    result = evaluate_run(
        sampler_uri, data_dir, judge_uri=judge_uri, per_class=per_class, top_p=top_p, limit=limit, seed=seed
    )
    return {key: result[key] for key in ("run_id", "metrics", "summary", "promoted")}
