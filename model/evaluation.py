"""Scoring a sampler with the judge (SPEC E1): class-balanced accuracy against cfg_scale, and Fréchet distances
that compare like with like, each with a bootstrap 95 % interval.

The protocol:

- **accuracies** are class-balanced (the mean of per-class recall): of the generated samples at each cfg_scale
  (``cond_balanced_acc_cfg<c>``), of the real test images (``real_test_balanced_acc``, what the judge can do) and of
  the VQ-VAE's reconstructions of those test images (``recon_test_balanced_acc``, what any prior on these codes can
  reach). None of these images was trained on by the judge or the VQ-VAE.
- **Fréchet distances** (FD) of three sets to one reference, the real test split with classes weighing equally:
  the generated samples, the *floor* (real training images: two real sets differ by this much from sampling alone)
  and the *ceiling* (VQ-VAE reconstructions of other training images, never those of the reference, so that no
  pairing shrinks the distance). The three sets hold the same number of images of each class (``Plan.per_class``)
  and are scored in one feature space: the judge's features projected on their leading ``dims`` principal
  directions, fitted on yet other training images, so that covariances are estimated from many more images than
  dimensions.
- every headline number gets ``<name>_lo`` / ``<name>_hi``: the percentile interval over stratified bootstrap
  resamples of every set at once (``model.bootstrap``).

Framework-free: ``tasks/evaluate.py`` samples, logs and draws. Dimension letters: N images, K classes, F judge
feature size, d the reduced feature size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model.bootstrap import REPLICATES, bootstrap
from model.metrics import PCA, balanced_frechet, balanced_hit_rate, conditional_accuracy, fit_pca, per_class_frechet

FLOOR, CEILING = "fd_floor_real_vs_test", "fd_ceiling_recon_vs_test"
REAL_ACC, RECON_ACC = "real_test_balanced_acc", "recon_test_balanced_acc"
PCA_DIMS = 16  # at most this many feature directions ...
IMAGES_PER_DIM = 10  # ... and at least this many images per compared set for each
PCA_FIT = 500  # training images the PCA is fitted on (at most)


def cfg_tag(cfg: float) -> str:
    """cfg_scale as it appears in metric and file names: 3.0 -> '3', 1.5 -> '1.5'."""
    return f"{cfg:g}"


def acc_name(cfg: float) -> str:
    return f"cond_balanced_acc_cfg{cfg_tag(cfg)}"


def fd_name(cfg: float) -> str:
    return f"fd_generated_cfg{cfg_tag(cfg)}"


def ratio_name(cfg: float) -> str:
    return f"fd_ratio_generated_cfg{cfg_tag(cfg)}_to_ceiling"


def headline_names(cfg_values: Sequence[float], fd_cfg: float) -> list[str]:
    """The numbers that get bootstrap intervals, in display order."""
    accuracies = [acc_name(c) for c in cfg_values]
    return [*accuracies, REAL_ACC, RECON_ACC, fd_name(fd_cfg), FLOOR, CEILING, ratio_name(fd_cfg)]


@dataclass
class Plan:
    """Which training images the evaluation reads (row numbers within the training split)."""

    floor_rows: np.ndarray  # real images compared with the test split
    ceiling_rows: np.ndarray  # other images, reconstructed by the VQ-VAE, then compared
    pca_rows: np.ndarray  # yet other images, whose judge features fit the PCA
    per_class: np.ndarray  # (K,) images of each class in every compared set (generated, floor, ceiling)


def plan(train_labels: np.ndarray, num_classes: int, per_class: int, seed: int, pca_fit: int = PCA_FIT) -> Plan:
    """Disjoint floor, ceiling and PCA rows; each class gets min(per_class, half its training images) in both sets."""
    rng = np.random.default_rng(seed)
    train_labels = np.asarray(train_labels)
    n = np.zeros(num_classes, dtype=np.int64)
    floor, ceiling, rest = [], [], []
    for c in range(num_classes):
        rows = rng.permutation(np.flatnonzero(train_labels == c))
        n[c] = min(per_class, len(rows) // 2)
        floor.append(rows[: n[c]])
        ceiling.append(rows[n[c] : 2 * n[c]])
        rest.append(rows[2 * n[c] :])
    pca_rows = rng.permutation(np.concatenate(rest))[:pca_fit]
    return Plan(np.sort(np.concatenate(floor)), np.sort(np.concatenate(ceiling)), np.sort(pca_rows), n)


def first_per_class(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sorted rows of the first ``counts[c]`` images of each class c (the generated set cut to the plan's sizes)."""
    labels = np.asarray(labels)
    rows = [np.flatnonzero(labels == c)[:n] for c, n in enumerate(counts)]
    return np.sort(np.concatenate(rows)).astype(np.int64)


@dataclass
class Verdicts:
    """What the judge said of one set of images."""

    probs: np.ndarray  # (N, K) class probabilities
    features: np.ndarray  # (N, F) judge features
    labels: np.ndarray  # (N,) the true (real sets) or requested (generated sets) class

    def take(self, rows: np.ndarray) -> Verdicts:
        return Verdicts(self.probs[rows], self.features[rows], self.labels[rows])


@dataclass
class Scores:
    """Accuracies and Fréchet distances of a sampler beside the real-image references, with intervals."""

    metrics: dict[str, float]  # every number, flat, as logged (headline numbers with _lo / _hi)
    accuracy: np.ndarray  # (n_cfg,) class-balanced accuracy per cfg_scale of the curve
    accuracy_per_class: np.ndarray  # (n_cfg, K)
    real_accuracy: tuple[np.ndarray, float]  # per class (K,), balanced: the judge on the real test split
    recon_accuracy: tuple[np.ndarray, float]  # the same on the VQ-VAE reconstructions of the test split
    fd: dict[str, float]  # class-balanced FD of generated, floor and ceiling to the test split
    fd_per_class: dict[str, np.ndarray]  # (K,) each; NaN where a set holds fewer than 2 images of the class
    intervals: dict[str, tuple[float, float]]  # headline name -> (lo, hi)
    dims: int  # d, the feature directions kept
    projected: dict[str, tuple[np.ndarray, np.ndarray]]  # "test" and each compared set: ((n, d) features, (n,) labels)
    notes: list[str] = field(default_factory=list)  # what was skipped and why


def feature_space(pca_features: np.ndarray, floor_features: np.ndarray, set_size: int) -> tuple[PCA, list[str]]:
    """The PCA the FDs are measured in: d = min(PCA_DIMS, F, set_size / IMAGES_PER_DIM) directions of the PCA images
    (of the floor set, with a note, when fewer than 2d PCA images exist)."""
    dims = max(1, min(PCA_DIMS, floor_features.shape[1], set_size // IMAGES_PER_DIM))
    if len(pca_features) >= 2 * dims:
        return fit_pca(pca_features, dims), []
    note = f"PCA fitted on the floor images: only {len(pca_features)} other training images"
    return fit_pca(floor_features, dims), [note]


def score(
    test: Verdicts,
    recon_test: Verdicts,
    floor: Verdicts,
    ceiling: Verdicts,
    generated: dict[float, Verdicts],
    pca_features: np.ndarray,
    cfg_values: Sequence[float],
    fd_cfg: float,
    class_names: Sequence[str],
    replicates: int = REPLICATES,
    seed: int = 0,
) -> Scores:
    """Score samples as the module docstring says. ``floor`` and ``ceiling`` hold the plan's images; the ``fd_cfg``
    samples are cut to the same number per class; ``recon_test`` is ``test`` reconstructed (same rows)."""
    k = len(class_names)
    counts = np.bincount(floor.labels, minlength=k)
    gen = generated[fd_cfg].take(first_per_class(generated[fd_cfg].labels, counts))
    pca, notes = feature_space(pca_features, floor.features, len(floor.labels))
    ref_z, ref_y = pca.project(test.features), test.labels
    compared = {fd_name(fd_cfg): gen, FLOOR: floor, CEILING: ceiling}
    z = {name: pca.project(v.features) for name, v in compared.items()}  # (n, d) each
    hits = {c: generated[c].probs.argmax(1) == generated[c].labels for c in cfg_values}
    real_hit, recon_hit = test.probs.argmax(1) == test.labels, recon_test.probs.argmax(1) == test.labels

    def numbers(rows: list[np.ndarray]) -> dict[str, float]:
        """Headline numbers on one draw: rows = [test, each cfg's samples, then each compared set]."""
        test_rows, *rest = rows
        out = {acc_name(c): balanced_hit_rate(hits[c][r], generated[c].labels[r]) for c, r in zip(cfg_values, rest)}
        out[REAL_ACC] = balanced_hit_rate(real_hit[test_rows], ref_y[test_rows])
        out[RECON_ACC] = balanced_hit_rate(recon_hit[test_rows], ref_y[test_rows])
        for name, r in zip(compared, rest[len(cfg_values) :]):
            out[name] = balanced_frechet(z[name][r], compared[name].labels[r], ref_z[test_rows], ref_y[test_rows])
        ceiling_fd = out[CEILING]
        out[ratio_name(fd_cfg)] = out[fd_name(fd_cfg)] / ceiling_fd if ceiling_fd > 0 else float("nan")
        return out

    label_sets = [ref_y, *(generated[c].labels for c in cfg_values), *(v.labels for v in compared.values())]
    identity = [np.arange(len(y)) for y in label_sets]
    point = numbers(identity)
    intervals = bootstrap(numbers, label_sets, replicates, seed)

    metrics: dict[str, float] = {}
    for name in headline_names(cfg_values, fd_cfg):
        lo, hi = intervals[name]
        metrics.update({name: point[name], f"{name}_lo": lo, f"{name}_hi": hi})
    acc_c = np.zeros((len(cfg_values), k))  # (n_cfg, K)
    for j, cfg in enumerate(cfg_values):
        acc_c[j] = conditional_accuracy(generated[cfg].probs, generated[cfg].labels, k)[0]
        metrics.update({f"{acc_name(cfg)}_class{c}": acc_c[j, c] for c in range(k)})
    real = conditional_accuracy(test.probs, test.labels, k)
    recon = conditional_accuracy(recon_test.probs, test.labels, k)
    metrics.update({f"real_test_recall_class{c}": v for c, v in enumerate(real[0])})
    metrics.update({f"recon_test_recall_class{c}": v for c, v in enumerate(recon[0])})
    what = {fd_name(fd_cfg): f"generated (cfg {fd_cfg:g})", FLOOR: "floor (real train)", CEILING: "ceiling (recon)"}
    fd_c = {
        name: per_class_frechet(z[name], v.labels, ref_z, ref_y, class_names, f"{what[name]} vs test", notes)
        for name, v in compared.items()
    }
    for name, values in fd_c.items():
        metrics.update({f"{name}_class{c}": v for c, v in enumerate(values)})
    metrics.update(
        fd_dims=float(pca.components.shape[1]),
        fd_pca_explained=pca.explained,
        n_test=float(len(ref_y)),
        n_per_class_min=float(counts.min()),
        n_per_class_max=float(counts.max()),
        n_generated_per_class=float(len(generated[cfg_values[0]].labels) // max(k, 1)),
        bootstrap_replicates=float(replicates),
    )
    skipped = [f"{c} {class_names[c]}" for c in range(k) if counts[c] == 0]
    if skipped:
        notes.append(f"FD without classes {', '.join(skipped)}: fewer than 2 training images")
    fd = {name: point[name] for name in compared}
    metrics = {key: float(v) for key, v in metrics.items()}
    acc = np.array([point[acc_name(c)] for c in cfg_values])
    projected = {"test": (ref_z, ref_y), **{name: (z[name], v.labels) for name, v in compared.items()}}
    dims = pca.components.shape[1]
    return Scores(metrics, acc, acc_c, real, recon, fd, fd_c, intervals, dims, projected, notes)


def _with_interval(metrics: dict[str, float], name: str, fmt: str = ".3f") -> str:
    lo, hi = metrics[f"{name}_lo"], metrics[f"{name}_hi"]
    return f"{metrics[name]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def summary_rows(scores: Scores, cfg_values: Sequence[float], fd_cfg: float, class_names: Sequence[str]) -> list[dict]:
    """The evaluation table: one row per class and one for all classes (accuracies, then FDs)."""
    columns = {fd_name(fd_cfg): f"FD generated cfg {fd_cfg:g}", FLOOR: "FD floor (real)", CEILING: "FD ceiling (recon)"}

    def cell(v: float, spec: str = ".2f") -> str:  # as the all-classes row writes them
        return format(float(v), spec) if np.isfinite(v) else "n/a"

    rows = []
    for c, name in enumerate(class_names):
        row: dict = {"class": f"{c}: {name}"}
        row.update(
            {f"acc cfg {cfg_tag(cfg)}": cell(scores.accuracy_per_class[j, c]) for j, cfg in enumerate(cfg_values)}
        )
        row.update({"acc real": cell(scores.real_accuracy[0][c]), "acc recon": cell(scores.recon_accuracy[0][c])})
        row.update({columns[n]: cell(v[c], ".3g") for n, v in scores.fd_per_class.items()})
        rows.append(row)
    m = scores.metrics
    total: dict = {"class": "all (class-balanced) [95% interval]"}
    total.update({f"acc cfg {cfg_tag(cfg)}": _with_interval(m, acc_name(cfg), ".2f") for cfg in cfg_values})
    total.update({"acc real": _with_interval(m, REAL_ACC, ".2f"), "acc recon": _with_interval(m, RECON_ACC, ".2f")})
    total.update({columns[n]: _with_interval(m, n, ".3g") for n in scores.fd})
    return [*rows, total]


def summary_text(metrics: dict[str, float], cfg_values: Sequence[float], fd_cfg: float, num_classes: int) -> str:
    """Two print-friendly lines with 95 % intervals: balanced accuracy against cfg_scale, and FD beside floor and
    ceiling."""
    accs = " | ".join(f"cfg {c:g} {_with_interval(metrics, acc_name(c))}" for c in cfg_values)
    dims, n = int(metrics["fd_dims"]), int(metrics["n_per_class_max"])
    return (
        f"class-conditional balanced accuracy: {accs} (real test {_with_interval(metrics, REAL_ACC)}, "
        f"VQ-VAE recon {_with_interval(metrics, RECON_ACC)}, chance {1 / num_classes:.3f})\n"
        f"Fréchet distance to test (judge features, {dims} PCA dims, up to {n} images per class): "
        f"generated cfg {fd_cfg:g} {_with_interval(metrics, fd_name(fd_cfg), '.3g')} | "
        f"floor real {_with_interval(metrics, FLOOR, '.3g')} | ceiling recon {_with_interval(metrics, CEILING, '.3g')} "
        f"| generated / ceiling {_with_interval(metrics, ratio_name(fd_cfg), '.2f')}"
    )


def redshift_summary(metrics: dict[str, float], fd_cfg: float) -> str:
    """One print-friendly line for a prior conditioned on redshift: Spearman rho of asked vs read-back z."""
    samples = _with_interval(metrics, f"z_rho_cfg{cfg_tag(fd_cfg)}", ".2f")
    ceiling, floor = (_with_interval(metrics, name, ".2f") for name in ("z_rho_real_test", "z_rho_floor_no_z"))
    return (
        f"redshift asked vs read back (Spearman rho): samples cfg {fd_cfg:g} {samples} | "
        f"ceiling real test {ceiling} | floor class-only {floor}"
    )
