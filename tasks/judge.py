"""Judge and evaluation stages (SPEC E1): train the morphology judge, then score a sampler with it.

``train_judge_run`` trains the CNN on the prepared training split (flips and 90-degree rotations), reports
it on the test split (accuracy, per-class precision / recall, confusion matrix) and registers
`galaxy-judge`. ``evaluate_run`` asks a registered sampler for ``per_class`` images of every class at each
cfg_scale and measures, in one MLflow run of the experiment "galaxy-evaluate":

- class-conditional accuracy: the fraction of samples the judge assigns to the class they were asked for;
- the Fréchet distance (FD) between judge features of generated and held-out real (test) images, per
  class and overall, beside a floor (real training images against the same test images, as many per
  class as were generated) and a ceiling (the sampler's own VQ-VAE reconstructions of the test images,
  whose accuracy and FD bound what any prior on those codes can reach).

The overall FD fits every set's Gaussian with each class weighing equally (samples are generated in
equal numbers per class; the real splits are not balanced), so a sampler that matches every class
scores as well as the floor whatever the real class proportions.

Dimension letters: N images, K classes, F judge feature size.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import mlflow
import numpy as np
import scipy.linalg
from matplotlib.figure import Figure
from mlflow.models import ModelSignature, get_model_info
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
from prefect import task

from model import judge as J
from model.data import load_prepared
from model.errors import UserError
from model.galaxy10 import CLASS_NAMES
from model.utils import pick_device
from tasks.retry import retry_on_io
from tasks import faults, tracking
from tasks.cache import stage_cache_key
from tasks.progress import bar
from tasks.vqvae import ModelRef, config_hash, promote, runs_dir

JUDGE_EXPERIMENT = "galaxy-judge"
EVALUATE_EXPERIMENT = "galaxy-evaluate"
MODEL_NAME = "galaxy-judge"
JUDGE_URI = f"models:/{MODEL_NAME}@champion"
SAMPLER_URI = "models:/galaxy-sampler@champion"
PYFUNC_CODE = Path(__file__).with_name("pyfunc") / "judge_model.py"
CFG_VALUES = (1.0, 3.0, 9.0)  # cfg_scale values of the class-conditional accuracy curve
FD_CFG = 3.0  # the cfg_scale whose samples are compared with real images
PER_CLASS = 50  # generated images per class and cfg_scale


def slug(name: str) -> str:
    """'in-between round smooth' -> 'in_between_round_smooth' (metric-name safe)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _cfg_tag(cfg: float) -> str:
    """cfg_scale as it appears in metric and file names: 3.0 -> '3', 1.5 -> '1.5'."""
    return f"{cfg:g}"


# --------------------------------------------------------------------------------------------------
# Training the judge


def judge_signature(size: int) -> ModelSignature:
    """Input: (N, S, S, 3) uint8 images; output: (N, K) probabilities or (N, F) features, float32."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        params=ParamSchema([ParamSpec("output", "string", "probs")]),
    )


def log_judge(checkpoint: Path, size: int, register_as: str | None = MODEL_NAME) -> tuple[str, str]:
    """Log the judge pyfunc (models-from-code + checkpoint artifact) to the active run; returns (URI, version)."""
    # named "model", not "judge": the judge/ run folder holds the figures
    return tracking.log_pyfunc("model", PYFUNC_CODE, {"checkpoint": checkpoint}, judge_signature(size), register_as)


def report_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """classification_report -> {prefix_accuracy, prefix_precision_<i>_<slug>, prefix_recall_<i>_<slug>}."""
    out = {f"{prefix}_accuracy": float(report["accuracy"])}
    for i, name in enumerate(CLASS_NAMES[: len(report["precision"])]):
        out[f"{prefix}_precision_{i}_{slug(name)}"] = float(report["precision"][i])
        out[f"{prefix}_recall_{i}_{slug(name)}"] = float(report["recall"][i])
    return out


def train_judge_run(
    data_dir: str | Path,
    preset_name: str = "demo",
    *,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    register_as: str | None = MODEL_NAME,
) -> ModelRef:
    """Train the judge on the training split, report it on the test split, log and register `galaxy-judge`."""
    tracking.setup()
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    size = data.meta["size"]
    if overrides.setdefault("image_size", size) != size:
        raise UserError(data_dir, f"images are {size} px but the judge config asks for {overrides['image_size']}")
    try:
        config = J.judge_preset(preset_name, **overrides)
    except TypeError as err:
        raise UserError(f"judge preset {preset_name}", str(err)) from None
    train_x, train_y = data.subset("train", limit)
    val_x, val_y = data.subset("val", limit and max(limit // 4, 20))
    test_x, test_y = data.subset("test", limit and max(limit // 4, 20))
    if len(train_x) < 2 or len(val_x) == 0 or len(test_x) == 0:
        raise UserError(data_dir, f"too few images to train a judge (train {len(train_x)}, val {len(val_x)}, test {len(test_x)})")
    device = pick_device(config.device)

    folder = runs_dir() / f"judge-{config_hash(config.to_dict(), data.key, limit, tracking.tracking_uri())}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "judge.pt"
    tags = tracking.base_tags(data.meta, device.type, stage="judge", preset=preset_name, trained_on=f"{data.meta['source']} train split")
    with tracking.run(JUDGE_EXPERIMENT, tracking.run_name(f"judge-{preset_name}", data.meta), tags) as active:
        run_id = active.info.run_id
        mlflow.log_params(tracking.flatten({
            "model": config.to_dict(), "preset": preset_name,
            "data": {"dir": str(data.root), "key": data.key, "source": data.meta["source"], "synthetic": data.synthetic,
                     "n_train": len(train_x), "n_val": len(val_x), "n_test": len(test_x)},
        }))
        with bar(total=None, desc=f"training judge ({preset_name})", unit="step") as pbar:

            def progress(done: int, total: int) -> None:
                pbar.total = total
                pbar.update(done - pbar.n)

            log = faults.logging_then_failing(tracking.MetricLogger())  # GALAXY_FAIL_AFTER_EPOCH (tests)
            result = J.train_judge(config, train_x, train_y, val_x, val_y, log=log, progress=progress)
        model = result.model
        J.save_judge(checkpoint, model.cpu(), result.history)
        model.to(device)
        test_probs, _ = J.predict(model, test_x)
        test_report = J.classification_report(test_y, test_probs.argmax(1), config.num_classes)
        train_report = J.classification_report(train_y, J.predict(model, train_x)[0].argmax(1), config.num_classes)
        metrics = report_metrics(test_report, "test")
        metrics.update(train_accuracy=train_report["accuracy"], best_val_acc=result.history[result.best_epoch - 1]["val_acc"],
                       best_epoch=float(result.best_epoch))
        mlflow.log_metrics(metrics)
        names = CLASS_NAMES[: config.num_classes]
        label = Path(str(data.meta["source"])).name  # e.g. synthetic-n3000-s0, Galaxy10_DECals.h5
        source = f"{'synthetic ' if data.synthetic and 'synthetic' not in label else ''}{label} test split ({len(test_x)} images)"
        tracking.log_figure(J.confusion_figure(test_report["confusion"], names, f"Judge on the {source}"), "judge/confusion.png")
        tracking.log_figure(J.precision_recall_figure(test_report, names, f"Judge per-class precision and recall, {source}"), "judge/precision_recall.png")
        tracking.log_array(test_report["confusion"], "judge/test_confusion.npy")
        tracking.log_array(np.stack([test_y, test_probs.argmax(1)]), "judge/test_labels_and_predictions.npy")
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
        model_uri, version = log_judge(checkpoint, config.image_size, register_as)
        if register_as:
            mlflow.set_tag("registered_model", f"{register_as}/{version}")
            promote(register_as, version, "test_accuracy", metrics["test_accuracy"], higher_is_better=True)
    headline = {k: float(metrics[k]) for k in ("test_accuracy", "train_accuracy", "best_val_acc")}
    return ModelRef(run_id=run_id, model_uri=model_uri, version=version, metrics=headline)


def load_judge_from_uri(model_uri: str):
    """The torch judge inside a registered `galaxy-judge` pyfunc (eval mode, CPU), and its checkpoint dict."""
    wrapper = tracking.unwrap_pyfunc(model_uri, "judge", MODEL_NAME)
    return wrapper.judge.cpu().eval(), wrapper.checkpoint


# --------------------------------------------------------------------------------------------------
# Fréchet distances with few images per class


def balanced_stats(features: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of the (N, F) features of ``classes``, each class weighing equally."""
    labels = np.asarray(labels)
    keep = np.isin(labels, list(classes))
    features, labels = np.asarray(features, dtype=np.float64)[keep], labels[keep]
    if len(features) < 2:
        raise ValueError(f"need at least 2 images, got {len(features)}")
    counts = {c: int((labels == c).sum()) for c in classes}
    weights = np.array([1.0 / counts[c] for c in labels])  # (N,)
    return np.average(features, axis=0, weights=weights), np.cov(features, rowvar=False, aweights=weights)


def balanced_frechet(f1: np.ndarray, y1: np.ndarray, f2: np.ndarray, y2: np.ndarray) -> float:
    """FD between two labelled feature sets over the classes both hold, every class weighing equally."""
    common = sorted(set(np.asarray(y1).tolist()) & set(np.asarray(y2).tolist()))
    if not common:
        return float("nan")
    with warnings.catch_warnings():  # few images per class: singular covariances are expected (and offset)
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return J.frechet_distance(*balanced_stats(f1, y1, common), *balanced_stats(f2, y2, common))


def per_class_frechet(
    f1: np.ndarray, y1: np.ndarray, f2: np.ndarray, y2: np.ndarray, num_classes: int, what: str, notes: list[str]
) -> np.ndarray:
    """FD per class (K,); NaN (and a line in ``notes``) where a set holds fewer than 2 images of the class."""
    out = np.full(num_classes, np.nan)
    skipped = []
    for c in range(num_classes):
        a, b = f1[np.asarray(y1) == c], f2[np.asarray(y2) == c]
        if len(a) < 2 or len(b) < 2:
            skipped.append(f"class {c} {CLASS_NAMES[c]} ({len(a)} vs {len(b)} images)")
            continue
        with warnings.catch_warnings():  # fewer images than features: singular covariances are expected
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            out[c] = J.frechet_from_features(a, b)
    if skipped:
        notes.append(f"{what}: per-class FD skipped (it needs 2 or more images on each side) for {'; '.join(skipped)}")
    return out


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted row numbers of up to ``per_class`` randomly chosen images of each class (seeded)."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


# --------------------------------------------------------------------------------------------------
# Evaluation figures


def frechet_bars_figure(rows: dict[str, np.ndarray], overall: dict[str, float], class_names: Sequence[str], title: str) -> Figure:
    """Grouped bars of per-class FD (one bar per compared set), overall values in the legend; log scale."""
    k = len(class_names)
    x = np.arange(k)
    width = 0.8 / max(len(rows), 1)
    colours = ("tab:gray", "tab:green", "tab:red", "tab:blue")
    fig = Figure(figsize=(2 + 0.85 * k, 5.2), layout="constrained")
    ax = fig.subplots()
    values = np.array([np.asarray(v, dtype=np.float64) for v in rows.values()]).reshape(len(rows), k)  # (sets, K)
    shown = np.isfinite(values) & (values > 0)
    log = bool(shown.any())
    for j, name in enumerate(rows):
        ax.bar(x - 0.4 + width * (j + 0.5), np.where(shown[j], values[j], np.nan), width, color=colours[j % len(colours)],
               label=f"{name} (overall {overall.get(name, float('nan')):.3g})")
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1)
    for c in range(k):
        if not np.isfinite(values[:, c]).any():
            ax.text(c, 0.02, "skipped:\n< 2 images", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8, color="0.4")
    ax.set_xticks(x, list(class_names), rotation=35, ha="right", fontsize=9)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylabel("Fréchet distance in judge features (lower is closer)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=len(rows), frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=12)
    return fig


def accuracy_curve_figure(cfg_values: Sequence[float], per_class: np.ndarray, overall: Sequence[float], real_acc: float, recon_acc: float) -> Figure:
    """The judge's class-accuracy-vs-cfg curve with the real-test and reconstruction accuracies as reference lines."""
    fig = J.class_accuracy_curve_figure(cfg_values, per_class, overall, CLASS_NAMES,
                                        title="Class-conditional accuracy: samples judged as the class they were asked for")
    ax = fig.axes[0]
    ax.axhline(real_acc, color="tab:green", ls=":", lw=2, label=f"real test images ({real_acc:.2f})")
    ax.axhline(recon_acc, color="tab:purple", ls="-.", lw=2, label=f"VQ-VAE reconstructions ({recon_acc:.2f})")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------------
# Evaluating a sampler


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
    from model.sampling import sample
    from model.train_vqvae import reconstruct_images
    from tasks.prior import load_sampler

    if per_class < 2:
        raise UserError("--per-class", f"{per_class} is too few: a Fréchet distance needs at least 2 images per class")
    cfg_values = [float(c) for c in cfg_values]
    if not cfg_values or any(not 0 <= c <= 100 for c in cfg_values):
        raise UserError("cfg_values", f"{cfg_values} must be a non-empty list of values in 0-100")
    if not 0 <= fd_cfg <= 100:
        raise UserError("fd_cfg", f"{fd_cfg} is outside 0-100")
    tracking.setup()
    data = load_prepared(data_dir)
    prior, vqvae = load_sampler(sampler_uri)
    judge, _ = load_judge_from_uri(judge_uri)
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

    batches = -(-len(requested) // 256)
    tags = tracking.base_tags(data.meta, device.type, stage="evaluate", sampler_uri=sampler_uri, judge_uri=judge_uri)
    with tracking.run(EVALUATE_EXPERIMENT, tracking.run_name("evaluate", data.meta), tags) as active, \
            bar(total=len(sweep) * batches * prior.seq_len, desc="sampling for evaluation", unit="tok") as pbar:
        run_id = active.info.run_id
        mlflow.log_params({
            "sampler_uri": sampler_uri, "judge_uri": judge_uri, "sampler_run_id": get_model_info(sampler_uri).run_id,
            "judge_run_id": get_model_info(judge_uri).run_id, "data_dir": str(data.root), "data_key": data.key,
            "cfg_values": ",".join(map(_cfg_tag, cfg_values)), "fd_cfg": _cfg_tag(fd_cfg), "per_class": per_class,
            "limit": limit, "seed": seed, "n_test": len(test_x), "n_floor_train": len(floor_x), "fd_weighting": "class-balanced",
        })
        # real images and reconstructions: the reference points
        test_probs, test_f = J.predict(judge, test_x)
        _, floor_f = J.predict(judge, floor_x)
        recon_x = reconstruct_images(vqvae, test_x, device=device)
        recon_probs, recon_f = J.predict(judge, recon_x)
        real_acc_c, real_acc = J.conditional_accuracy(test_probs, test_y, k)
        recon_acc_c, recon_acc = J.conditional_accuracy(recon_probs, test_y, k)

        # samples at every cfg_scale
        generated: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        for i, cfg in enumerate(sweep):
            base = i * batches * prior.seq_len
            s = sample(prior, vqvae, requested, cfg_scale=cfg, seed=seed, progress=lambda n, _b=base: pbar.update(_b + n - pbar.n))
            generated[cfg] = J.predict(judge, s.images)
            tracking.log_array(generated[cfg][0].argmax(1), f"evaluate/predictions_cfg{_cfg_tag(cfg)}.npy")
        acc_c = np.zeros((len(cfg_values), k))  # (n_cfg, K)
        acc = np.zeros(len(cfg_values))
        metrics: dict[str, float] = {}
        for j, cfg in enumerate(cfg_values):
            acc_c[j], acc[j] = J.conditional_accuracy(generated[cfg][0], requested, k)
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
            fd_name: per_class_frechet(gen_f, requested, test_f, test_y, k, f"generated (cfg {fd_cfg:g}) vs test", notes),
            "fd_floor_train_vs_test": per_class_frechet(floor_f, floor_y, test_f, test_y, k, "train vs test (floor)", notes),
            "fd_recon_vs_test": per_class_frechet(recon_f, test_y, test_f, test_y, k, "reconstructions vs test (ceiling)", notes),
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
        names = list(CLASS_NAMES[:k])
        tracking.log_figure(accuracy_curve_figure(cfg_values, acc_c, acc, real_acc, recon_acc), "evaluate/class_accuracy_vs_cfg.png")
        gen_report = J.classification_report(requested, generated[fd_cfg][0].argmax(1), k)
        tracking.log_figure(J.confusion_figure(gen_report["confusion"], names, f"Judge verdicts on samples (cfg {fd_cfg:g}), rows: requested class"),
                            f"evaluate/confusion_cfg{_cfg_tag(fd_cfg)}.png")
        recon_report = J.classification_report(test_y, recon_probs.argmax(1), k)
        tracking.log_figure(J.confusion_figure(recon_report["confusion"], names, "Judge verdicts on VQ-VAE reconstructions of the test split"),
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
        from model.atlas import metrics_table_figure

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


# --------------------------------------------------------------------------------------------------
# Prefect tasks


@task(name="train-judge", persist_result=True, cache_key_fn=stage_cache_key)
def train_judge_task(data_dir: str, preset_name: str = "demo", epochs: int | None = None, overrides: dict | None = None, limit: int | None = None) -> dict:
    """Train and register the morphology judge; returns {run_id, model_uri, version, metrics}."""
    return train_judge_run(data_dir, preset_name, epochs=epochs, overrides=overrides, limit=limit).__dict__


@task(name="evaluate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def evaluate_task(
    sampler_uri: str, data_dir: str, judge_uri: str = JUDGE_URI, limit: int | None = None, seed: int = 0, per_class: int = PER_CLASS
) -> dict:
    """Judge a registered sampler (accuracy vs cfg, Fréchet distances); returns {run_id, metrics, summary}."""
    result = evaluate_run(sampler_uri, data_dir, judge_uri=judge_uri, per_class=per_class, limit=limit, seed=seed)
    return {"run_id": result["run_id"], "metrics": result["metrics"], "summary": result["summary"]}
