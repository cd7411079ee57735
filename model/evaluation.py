"""Scoring a sampler with the judge (SPEC E1): class-conditional accuracy against cfg_scale and Fréchet distances.

Inputs are the judge's verdicts (class probabilities and features) on four sets of images: the real test split,
real training images (the floor), the VQ-VAE's reconstructions of the test split (the ceiling) and samples
generated for ``requested`` classes at each cfg_scale. Every FD is measured against the test split, with
classes weighing equally. Framework-free: ``tasks/evaluate.py`` samples, logs and draws.

Dimension letters: N images, K classes, F judge feature size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model.metrics import balanced_frechet, conditional_accuracy, per_class_frechet

FLOOR, CEILING = "fd_floor_train_vs_test", "fd_recon_vs_test"


def cfg_tag(cfg: float) -> str:
    """cfg_scale as it appears in metric and file names: 3.0 -> '3', 1.5 -> '1.5'."""
    return f"{cfg:g}"


@dataclass
class Verdicts:
    """What the judge said of one set of images."""

    probs: np.ndarray  # (N, K) class probabilities
    features: np.ndarray  # (N, F) judge features
    labels: np.ndarray  # (N,) the true (real sets) or requested (generated sets) class


@dataclass
class Scores:
    """Accuracies and Fréchet distances of a sampler beside the real-image references."""

    metrics: dict[str, float]  # every number, flat, as logged
    accuracy: np.ndarray  # (n_cfg,) class-conditional accuracy per cfg_scale of the curve
    accuracy_per_class: np.ndarray  # (n_cfg, K)
    real_accuracy: tuple[np.ndarray, float]  # per class (K,), overall: the judge on the real test split
    recon_accuracy: tuple[np.ndarray, float]  # the same on the VQ-VAE reconstructions
    fd: dict[str, float]  # overall FD (class-balanced) of generated, floor and ceiling
    fd_per_class: dict[str, np.ndarray]  # (K,) each; NaN where a class has fewer than 2 images
    notes: list[str] = field(default_factory=list)  # what was skipped and why


def score(
    test: Verdicts,
    floor: Verdicts,
    recon: Verdicts,
    generated: dict[float, Verdicts],
    cfg_values: Sequence[float],
    fd_cfg: float,
    class_names: Sequence[str],
) -> Scores:
    """Accuracy of the generated sets at each cfg in ``cfg_values``; FD of the ``fd_cfg`` set, floor and ceiling."""
    k = len(class_names)
    notes: list[str] = []
    metrics: dict[str, float] = {}
    acc_c, acc = np.zeros((len(cfg_values), k)), np.zeros(len(cfg_values))  # (n_cfg, K), (n_cfg,)
    for j, cfg in enumerate(cfg_values):
        acc_c[j], acc[j] = conditional_accuracy(generated[cfg].probs, generated[cfg].labels, k)
        metrics[f"cond_acc_cfg{cfg_tag(cfg)}"] = acc[j]
        metrics.update({f"cond_acc_cfg{cfg_tag(cfg)}_class{c}": acc_c[j, c] for c in range(k)})
    real = conditional_accuracy(test.probs, test.labels, k)
    recon_acc = conditional_accuracy(recon.probs, recon.labels, k)

    gen = generated[fd_cfg]
    named = {
        f"fd_generated_cfg{cfg_tag(fd_cfg)}": (gen, f"generated (cfg {fd_cfg:g}) vs test"),
        FLOOR: (floor, "train vs test (floor)"),
        CEILING: (recon, "reconstructions vs test (ceiling)"),
    }
    fd = {name: balanced_frechet(v.features, v.labels, test.features, test.labels) for name, (v, _) in named.items()}
    fd_c = {
        name: per_class_frechet(v.features, v.labels, test.features, test.labels, class_names, what, notes)
        for name, (v, what) in named.items()
    }
    metrics.update(fd)
    for name, values in fd_c.items():
        metrics.update({f"{name}_class{c}": v for c, v in enumerate(values)})
    metrics.update(real_test_accuracy=real[1], recon_accuracy=recon_acc[1])
    metrics.update({f"real_test_accuracy_class{c}": v for c, v in enumerate(real[0])})
    metrics.update({f"recon_accuracy_class{c}": v for c, v in enumerate(recon_acc[0])})
    per_class = len(gen.labels) // max(k, 1)
    metrics.update(
        n_generated_per_class=float(per_class), n_test=float(len(test.labels)), n_floor_train=float(len(floor.labels))
    )
    metrics = {key: float(v) for key, v in metrics.items()}
    return Scores(metrics, acc, acc_c, real, recon_acc, fd, fd_c, notes)


def summary_rows(scores: Scores, cfg_values: Sequence[float], fd_cfg: float, class_names: Sequence[str]) -> list[dict]:
    """The evaluation table: one row per class and one for all classes (accuracies, then FDs)."""
    gen_name = f"fd_generated_cfg{cfg_tag(fd_cfg)}"
    columns = {gen_name: f"FD generated cfg {fd_cfg:g}", FLOOR: "FD floor (real train)", CEILING: "FD ceiling (recon)"}

    def cell(v: float) -> float | str:
        return v if np.isfinite(v) else "n/a"

    rows = []
    for c, name in enumerate(class_names):
        row: dict = {"class": f"{c}: {name}"}
        row.update(
            {f"acc cfg {cfg_tag(cfg)}": cell(scores.accuracy_per_class[j, c]) for j, cfg in enumerate(cfg_values)}
        )
        row.update({"acc real": cell(scores.real_accuracy[0][c]), "acc recon": cell(scores.recon_accuracy[0][c])})
        row.update({columns[n]: cell(v[c]) for n, v in scores.fd_per_class.items()})
        rows.append(row)
    total: dict = {"class": "all (FD class-balanced)"}
    total.update({f"acc cfg {cfg_tag(cfg)}": scores.accuracy[j] for j, cfg in enumerate(cfg_values)})
    total.update({"acc real": scores.real_accuracy[1], "acc recon": scores.recon_accuracy[1]})
    total.update({columns[n]: cell(v) for n, v in scores.fd.items()})
    return [*rows, total]


def summary_text(metrics: dict[str, float], cfg_values: Sequence[float], fd_cfg: float, num_classes: int) -> str:
    """Two print-friendly lines: accuracy against cfg_scale, and FD of the samples beside floor and ceiling."""
    accs = " | ".join(f"cfg {c:g} {metrics[f'cond_acc_cfg{cfg_tag(c)}']:.3f}" for c in cfg_values)
    generated = metrics[f"fd_generated_cfg{cfg_tag(fd_cfg)}"]
    return (
        f"class-conditional accuracy: {accs} (real test {metrics['real_test_accuracy']:.3f}, "
        f"VQ-VAE recon {metrics['recon_accuracy']:.3f}, chance {1 / num_classes:.3f})\n"
        f"Fréchet distance to test (judge features): generated cfg {fd_cfg:g} {generated:.4g} | "
        f"floor train {metrics[FLOOR]:.4g} | ceiling recon {metrics[CEILING]:.4g}"
    )
