"""Evaluate stage (SPEC E1): score a registered sampler with the registered judge, in one MLflow run.

``evaluate_run`` asks the sampler for ``per_class`` images of every class at each cfg_scale and measures,
in one run of the experiment "galaxy-evaluate":

- class-conditional accuracy: the fraction of samples the judge assigns to the class they were asked for;
- the Fréchet distance (FD) between judge features of generated and held-out real (test) images, per
  class and overall, beside a floor (real training images against the same test images, as many per
  class as were generated) and a ceiling (the sampler's own VQ-VAE reconstructions of the test images,
  whose accuracy and FD bound what any prior on those codes can reach).

The overall FD fits every set's Gaussian with each class weighing equally (samples are generated in
equal numbers per class; the real splits are not balanced).

Dimension letters: N images, K classes, F judge feature size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import get_model_info
from prefect import task

from model.data import load_prepared
from model.errors import UserError
from model.galaxy10 import CLASS_NAMES
from model.judge import predict
from model.metrics import (
    balanced_frechet,
    balanced_subset,
    classification_report,
    conditional_accuracy,
    per_class_frechet,
)
from model.plotting.evaluation import accuracy_curve_figure, confusion_figure, frechet_bars_figure
from model.plotting.grids import metrics_table_figure
from model.sampling import sample
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


def _cfg_tag(cfg: float) -> str:
    """cfg_scale as it appears in metric and file names: 3.0 -> '3', 1.5 -> '1.5'."""
    return f"{cfg:g}"


def evaluate_run(
    sampler_uri: str,
    data_dir: str | Path,
    *,
    judge_uri: str = JUDGE_URI,
    cfg_values: Sequence[float] = CFG_VALUES,
    per_class: int = PER_CLASS,
    fd_cfg: float = FD_CFG,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Judge a sampler's class-conditional samples against real images; returns {run_id, metrics, all_metrics, summary}."""
    if per_class < 2:
        raise UserError("--per-class", f"{per_class} is too few: a Fréchet distance needs at least 2 images per class")
    cfg_values = [float(c) for c in cfg_values]
    if not cfg_values or any(not 0 <= c <= 100 for c in cfg_values):
        raise UserError("cfg_values", f"{cfg_values} must be a non-empty list of values in 0-100")
    if not 0 <= fd_cfg <= 100:
        raise UserError("fd_cfg", f"{fd_cfg} is outside 0-100")
    tracking.setup()
    data = load_prepared(data_dir)
    prior, vqvae = registry.load_sampler(sampler_uri)
    judge, _ = registry.load_judge(judge_uri)
    k = judge.config.num_classes
    size = data.meta["size"]
    if judge.config.image_size != size or vqvae.config.image_size != size:
        raise UserError(data_dir, f"images are {size} px, the sampler makes {vqvae.config.image_size} px and the judge expects {judge.config.image_size} px")
    if prior.num_classes != k:
        raise UserError(sampler_uri, f"the sampler knows {prior.num_classes} classes but the judge {k}")
    device = pick_device()
    prior.to(device), vqvae.to(device), judge.to(device)

    test_x, test_y = data.subset("test", limit)
    train_rows = data.indices("train")[:limit]
    floor_rows = train_rows[balanced_subset(data.labels[train_rows], per_class, seed)]  # only these images are read
    floor_x, floor_y = np.asarray(data.images[floor_rows]), data.labels[floor_rows].astype(np.int64)
    if len(test_x) < 2:
        raise UserError(data_dir, f"the test split holds {len(test_x)} images: too few to compare with")
    requested = np.repeat(np.arange(k), per_class)  # (N,) the class asked for, per_class of each
    sweep = list(dict.fromkeys([*cfg_values, fd_cfg]))  # fd_cfg sampled once even when it is on the curve
    notes: list[str] = []
    names = list(CLASS_NAMES[:k])

    batches = -(-len(requested) // 256)
    tags = tracking.base_tags(data.meta, device.type, stage="evaluate", sampler_uri=sampler_uri, judge_uri=judge_uri)
    with tracking.run(EXPERIMENT, tracking.run_name("evaluate", data.meta), tags) as active, \
            bar(total=len(sweep) * batches * prior.seq_len, desc="sampling for evaluation", unit="tok") as pbar:
        run_id = active.info.run_id
        mlflow.log_params({
            "sampler_uri": sampler_uri, "judge_uri": judge_uri, "sampler_run_id": get_model_info(sampler_uri).run_id,
            "judge_run_id": get_model_info(judge_uri).run_id, "data_dir": str(data.root), "data_key": data.key,
            "cfg_values": ",".join(map(_cfg_tag, cfg_values)), "fd_cfg": _cfg_tag(fd_cfg), "per_class": per_class,
            "limit": limit, "seed": seed, "n_test": len(test_x), "n_floor_train": len(floor_x), "fd_weighting": "class-balanced",
        })
        # real images and reconstructions: the reference points
        test_probs, test_f = predict(judge, test_x)
        _, floor_f = predict(judge, floor_x)
        recon_x = reconstruct_images(vqvae, test_x, device=device)
        recon_probs, recon_f = predict(judge, recon_x)
        real_acc_c, real_acc = conditional_accuracy(test_probs, test_y, k)
        recon_acc_c, recon_acc = conditional_accuracy(recon_probs, test_y, k)

        # samples at every cfg_scale
        generated: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        for i, cfg in enumerate(sweep):
            base = i * batches * prior.seq_len
            s = sample(prior, vqvae, requested, cfg_scale=cfg, seed=seed, progress=lambda n, _b=base: pbar.update(_b + n - pbar.n))
            generated[cfg] = predict(judge, s.images)
            tracking.log_array(generated[cfg][0].argmax(1), f"evaluate/predictions_cfg{_cfg_tag(cfg)}.npy")
        acc_c = np.zeros((len(cfg_values), k))  # (n_cfg, K)
        acc = np.zeros(len(cfg_values))
        metrics: dict[str, float] = {}
        for j, cfg in enumerate(cfg_values):
            acc_c[j], acc[j] = conditional_accuracy(generated[cfg][0], requested, k)
            metrics[f"cond_acc_cfg{_cfg_tag(cfg)}"] = acc[j]
            metrics.update({f"cond_acc_cfg{_cfg_tag(cfg)}_class{c}": acc_c[j, c] for c in range(k)})

        # Fréchet distances in judge feature space, every one against the real test images
        gen_f = generated[fd_cfg][1]
        fd_name = f"fd_generated_cfg{_cfg_tag(fd_cfg)}"
        fd = {
            fd_name: balanced_frechet(gen_f, requested, test_f, test_y),
            "fd_floor_train_vs_test": balanced_frechet(floor_f, floor_y, test_f, test_y),
            "fd_recon_vs_test": balanced_frechet(recon_f, test_y, test_f, test_y),
        }
        fd_c = {
            fd_name: per_class_frechet(gen_f, requested, test_f, test_y, names, f"generated (cfg {fd_cfg:g}) vs test", notes),
            "fd_floor_train_vs_test": per_class_frechet(floor_f, floor_y, test_f, test_y, names, "train vs test (floor)", notes),
            "fd_recon_vs_test": per_class_frechet(recon_f, test_y, test_f, test_y, names, "reconstructions vs test (ceiling)", notes),
        }
        metrics.update(fd)
        for name, values in fd_c.items():
            metrics.update({f"{name}_class{c}": v for c, v in enumerate(values)})
        metrics.update(real_test_accuracy=real_acc, recon_accuracy=recon_acc)
        metrics.update({f"real_test_accuracy_class{c}": v for c, v in enumerate(real_acc_c)})
        metrics.update({f"recon_accuracy_class{c}": v for c, v in enumerate(recon_acc_c)})
        metrics.update(n_generated_per_class=float(per_class), n_test=float(len(test_x)), n_floor_train=float(len(floor_x)))
        metrics = {key: float(v) for key, v in metrics.items()}
        finite = {key: v for key, v in metrics.items() if np.isfinite(v)}
        mlflow.log_metrics(finite)

        # figures and arrays
        tracking.log_figure(accuracy_curve_figure(cfg_values, acc_c, acc, real_acc, recon_acc, names), "evaluate/class_accuracy_vs_cfg.png")
        gen_report = classification_report(requested, generated[fd_cfg][0].argmax(1), k)
        tracking.log_figure(confusion_figure(gen_report["confusion"], names, f"Judge verdicts on samples (cfg {fd_cfg:g}), rows: requested class"),
                            f"evaluate/confusion_cfg{_cfg_tag(fd_cfg)}.png")
        recon_report = classification_report(test_y, recon_probs.argmax(1), k)
        tracking.log_figure(confusion_figure(recon_report["confusion"], names, "Judge verdicts on VQ-VAE reconstructions of the test split"),
                            "evaluate/confusion_recon.png")
        labels_fd = {fd_name: f"generated, cfg {fd_cfg:g}", "fd_floor_train_vs_test": "floor: real train", "fd_recon_vs_test": "ceiling: VQ-VAE recon"}
        tracking.log_figure(
            frechet_bars_figure({labels_fd[n]: v for n, v in fd_c.items()}, {labels_fd[n]: v for n, v in fd.items()}, names,
                                "Fréchet distance to the real test images, per class"),
            "evaluate/frechet_per_class.png",
        )
        fd_cols = {fd_name: f"FD generated cfg {fd_cfg:g}", "fd_floor_train_vs_test": "FD floor (real train)", "fd_recon_vs_test": "FD ceiling (recon)"}

        def cell(v: float) -> float | str:
            return v if np.isfinite(v) else "n/a"

        rows = [{"class": f"{c}: {name}", **{f"acc cfg {_cfg_tag(cfg)}": cell(acc_c[j, c]) for j, cfg in enumerate(cfg_values)},
                 "acc real": cell(real_acc_c[c]), "acc recon": cell(recon_acc_c[c]), **{fd_cols[n]: cell(v[c]) for n, v in fd_c.items()}}
                for c, name in enumerate(names)]
        rows.append({"class": "all (FD class-balanced)", **{f"acc cfg {_cfg_tag(cfg)}": acc[j] for j, cfg in enumerate(cfg_values)},
                     "acc real": real_acc, "acc recon": recon_acc, **{fd_cols[n]: cell(v) for n, v in fd.items()}})
        tracking.log_figure(metrics_table_figure(rows, list(rows[0]), "Evaluation summary: judge accuracy and Fréchet distance (FD) to the test split"),
                            "evaluate/summary.png")
        tracking.log_array(requested, "evaluate/requested_labels.npy")
        tracking.log_array(test_y, "evaluate/test_labels.npy")
        tracking.log_array(test_f, "evaluate/features_test.npy")
        tracking.log_array(gen_f, f"evaluate/features_generated_cfg{_cfg_tag(fd_cfg)}.npy")
        summary = summary_text(metrics, cfg_values, fd_cfg, k)
        as_json = {key: (v if math.isfinite(v) else None) for key, v in metrics.items()}  # NaN is not JSON
        mlflow.log_dict({"sampler_uri": sampler_uri, "judge_uri": judge_uri, "metrics": as_json, "notes": notes, "summary": summary},
                        "evaluate/summary.json")
        if notes:
            mlflow.log_text("\n".join(notes) + "\n", "evaluate/notes.txt")
            mlflow.set_tag("notes", "some per-class FDs skipped for want of images (see evaluate/notes.txt)")
    headline = {key: metrics[key] for key in (*(f"cond_acc_cfg{_cfg_tag(c)}" for c in cfg_values), fd_name,
                                              "fd_floor_train_vs_test", "fd_recon_vs_test", "recon_accuracy", "real_test_accuracy")}
    return {"run_id": run_id, "metrics": headline, "all_metrics": metrics, "notes": notes, "summary": summary}


def summary_text(metrics: dict[str, float], cfg_values: Sequence[float], fd_cfg: float, num_classes: int) -> str:
    """Two print-friendly lines: accuracy against cfg_scale, and FD of the samples beside floor and ceiling."""
    accs = " | ".join(f"cfg {c:g} {metrics[f'cond_acc_cfg{_cfg_tag(c)}']:.3f}" for c in cfg_values)
    return (
        f"class-conditional accuracy: {accs} (real test {metrics['real_test_accuracy']:.3f}, "
        f"VQ-VAE recon {metrics['recon_accuracy']:.3f}, chance {1 / num_classes:.3f})\n"
        f"Fréchet distance to test (judge features): generated cfg {fd_cfg:g} {metrics[f'fd_generated_cfg{_cfg_tag(fd_cfg)}']:.4g} | "
        f"floor train {metrics['fd_floor_train_vs_test']:.4g} | ceiling recon {metrics['fd_recon_vs_test']:.4g}"
    )



@task(name="evaluate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def evaluate_task(
    sampler_uri: str, data_dir: str, judge_uri: str = JUDGE_URI, limit: int | None = None, seed: int = 0, per_class: int = PER_CLASS
) -> dict:
    """Judge a registered sampler (accuracy vs cfg, Fréchet distances); returns {run_id, metrics, summary}."""
    result = evaluate_run(sampler_uri, data_dir, judge_uri=judge_uri, per_class=per_class, limit=limit, seed=seed)
    return {"run_id": result["run_id"], "metrics": result["metrics"], "summary": result["summary"]}
