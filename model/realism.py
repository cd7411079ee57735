"""The realism report: real against synthetic Galaxy10-format images, statistic by statistic, and a two-sample test.

Both files are read in blocks (never whole), their first ``limit`` images brought to one side S with the
anti-aliased resize of ``galaxy data prepare`` and measured (``model.realism_stats``). The report gives, per
statistic, the median and interquartile range of each side (overall and per class when both files have
labels) and a univariate ROC AUC, P(real value > synthetic value); and a classifier two-sample test: a
logistic regression on the standardised statistics (NaN imputed by the training folds' median, with
missing-value indicators) telling real from synthetic, its ROC AUC cross-validated over stratified folds.
0.5 means the two sets cannot be told apart by these statistics; 1 means always. The larger side is
subsampled (seeded) to at most ``max_ratio`` times the smaller before the classifier sees it.

Dimension letters: N images, S side in pixels, F statistics (features).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.data import resize_images
from model.errors import UserError
from model.galaxy10 import CLASS_NAMES, IMAGE_KEY, LABEL_KEY
from model.realism_stats import DETECT_K, STAT_NAMES, STATISTICS, measure_images
from model.source import READ_BYTES, block_rows, open_h5, read_ahead, short_error, validate_h5

MIN_IMAGES = 10  # fewer images on either side cannot be cross-validated over 5 folds
UNLABELLED = -1  # the class id of the figure's row when the real file has no labels


@dataclass
class Measured:
    """The statistics of one file's first images, their labels, and a few images of each class for the figure."""

    path: Path
    stats: dict[str, np.ndarray]  # name -> (N,) float64, NaN where undefined
    labels: np.ndarray | None  # (N,) int64, None when the file has no 'ans'
    samples: dict[int, np.ndarray]  # class id (UNLABELLED without labels) -> (k, S, S, 3) uint8, the first k
    n_file: int  # images in the whole file

    @property
    def n(self) -> int:
        return len(self.stats[STAT_NAMES[0]])

    def matrix(self) -> np.ndarray:
        """(N, F) statistics in STAT_NAMES order."""
        return np.stack([self.stats[name] for name in STAT_NAMES], axis=1)


def measure_file(
    path: str | Path,
    *,
    size: int = 128,
    limit: int | None = None,
    keep: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Measured:
    """Measure the first ``limit`` images of a Galaxy10-format file at ``size`` px (labels optional).

    ``progress(k)`` is called with the number of images measured in each block.
    """
    src = validate_h5(path, require_labels=False)
    if size > src.side:
        raise UserError(src.path, f"images are {src.side} px, smaller than the common size {size}")
    n = src.n if limit is None else min(src.n, limit)
    if n < MIN_IMAGES:
        raise UserError(src.path, f"only {n} images; the realism report needs at least {MIN_IMAGES}")
    with open_h5(src.path) as f:
        try:
            pxscale = f["pxscale"][:n].astype(np.float64)
            labels = f[LABEL_KEY][:n].astype(np.int64) if src.labelled else None
        except OSError as err:
            problem = f"cannot read 'pxscale' or 'ans' (truncated or corrupt?): {short_error(err)}"
            raise UserError(src.path, problem) from None
        chunks = f[IMAGE_KEY].chunks
    if not np.all(np.isfinite(pxscale) & (pxscale > 0)):
        raise UserError(src.path, "'pxscale' holds a value that is not a positive number")
    scales = pxscale * src.side / size  # (N,) arcsec per pixel at the common side
    parts: list[dict[str, np.ndarray]] = []
    samples: dict[int, list[np.ndarray]] = {}
    blocks = read_ahead(src, block_rows(chunks, src.side * src.side * 3, READ_BYTES))
    try:
        for start, images in blocks:
            stop = min(start + len(images), n)
            small = resize_images(images[: stop - start], size)  # (n_block, S, S, 3)
            parts.append(measure_images(small, scales[start:stop]))
            if progress:
                progress(len(small))
            for i, image in enumerate(small):
                shown = samples.setdefault(UNLABELLED if labels is None else int(labels[start + i]), [])
                if len(shown) < keep:
                    shown.append(image.copy())
            if stop >= n:
                break
    finally:
        blocks.close()
    stats = {name: np.concatenate([p[name] for p in parts]) for name in STAT_NAMES}
    return Measured(src.path, stats, labels, {c: np.stack(v) for c, v in sorted(samples.items())}, src.n)


def summary(values: np.ndarray) -> dict[str, float]:
    """Median, quartiles and count of the finite values (NaN when there are none)."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "n": 0}
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "n": int(len(v))}


def univariate_auc(real: np.ndarray, synthetic: np.ndarray) -> float:
    """P(real value > synthetic value), ties counting one half, over the finite values (Mann-Whitney U / n1 n2)."""
    from scipy.stats import rankdata

    a, b = real[np.isfinite(real)], synthetic[np.isfinite(synthetic)]
    if len(a) == 0 or len(b) == 0:
        return math.nan
    ranks = rankdata(np.concatenate([a, b]))  # (n_a + n_b,) mid-ranks for ties
    return float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


def classifier_auc(
    real: np.ndarray, synthetic: np.ndarray, *, seed: int = 0, folds: int = 5, max_ratio: float = 4.0
) -> tuple[np.ndarray, int, int]:
    """(fold ROC AUCs (folds,), real rows used, synthetic rows used) of the classifier two-sample test.

    ``real`` (N_r, F) and ``synthetic`` (N_s, F) may hold NaN; the larger side is subsampled (seeded) to at
    most ``max_ratio`` times the smaller.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    cap = int(max_ratio * min(len(real), len(synthetic)))
    real, synthetic = (rng.permutation(x)[:cap] if len(x) > cap else x for x in (real, synthetic))
    x = np.concatenate([real, synthetic])  # (n_r + n_s, F)
    y = np.r_[np.ones(len(real), int), np.zeros(len(synthetic), int)]
    model = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=5000),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_score(model, x, y, cv=cv, scoring="roc_auc"), len(real), len(synthetic)


@dataclass
class RealismReport:
    """Everything the report says: the two-sample AUC, and per statistic the summaries and univariate AUC."""

    auc: float  # mean ROC AUC over the folds
    auc_sd: float  # their standard deviation (numpy's, ddof 0)
    fold_aucs: list[float]
    n_real: int  # images measured on each side
    n_synthetic: int
    n_real_used: int  # rows the classifier saw after subsampling
    n_synthetic_used: int
    statistics: dict[str, dict]  # name -> unit, description, auc, real summary, synthetic summary
    per_class: dict[str, dict] | None  # class name -> statistic -> {real, synthetic} summaries; None without labels
    note: str | None = None  # why the per-class part is missing
    settings: dict = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, float]:
        """The statistic whose univariate AUC lies farthest from 0.5, and that AUC."""
        finite = {k: v["auc"] for k, v in self.statistics.items() if np.isfinite(v["auc"])}
        if not finite:
            return "none", math.nan
        name = max(finite, key=lambda k: abs(finite[k] - 0.5))
        return name, finite[name]

    def last_line(self) -> str:
        name, auc = self.worst
        return (
            f"realism: AUC {self.auc:.3f} ± {self.auc_sd:.3f} ({self.n_real} real vs {self.n_synthetic} synthetic; "
            f"worst statistic {name} AUC {auc:.3f})"
        )

    def table(self) -> str:
        """One line per statistic: unit, real and synthetic median [IQR], univariate AUC."""
        lines = [f"{'statistic':<20}{'unit':<18}{'real median [IQR]':>28}{'synthetic median [IQR]':>28}{'AUC':>7}"]
        for name, row in self.statistics.items():
            cells = [f"{s['median']:.3g} [{s['q25']:.3g}, {s['q75']:.3g}]" for s in (row["real"], row["synthetic"])]
            lines.append(f"{name:<20}{row['unit']:<18}{cells[0]:>28}{cells[1]:>28}{row['auc']:>7.3f}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        name, auc = self.worst
        return {
            "auc": self.auc,
            "auc_sd": self.auc_sd,
            "fold_aucs": self.fold_aucs,
            "worst_statistic": name,
            "worst_statistic_auc": auc,
            "n_real": self.n_real,
            "n_synthetic": self.n_synthetic,
            "n_real_used": self.n_real_used,
            "n_synthetic_used": self.n_synthetic_used,
            "statistics": self.statistics,
            "per_class": self.per_class,
            "note": self.note,
            "settings": self.settings,
        }


def compare(
    real: Measured, synthetic: Measured, *, seed: int = 0, folds: int = 5, max_ratio: float = 4.0
) -> RealismReport:
    """The report of ``synthetic`` against ``real``."""
    statistics = {
        s.name: {
            "unit": s.unit,
            "description": s.description,
            "auc": univariate_auc(real.stats[s.name], synthetic.stats[s.name]),
            "real": summary(real.stats[s.name]),
            "synthetic": summary(synthetic.stats[s.name]),
        }
        for s in STATISTICS
    }
    fold_aucs, n_r, n_s = classifier_auc(real.matrix(), synthetic.matrix(), seed=seed, folds=folds, max_ratio=max_ratio)
    per_class, note = None, None
    if real.labels is None or synthetic.labels is None:
        unlabelled = real.path if real.labels is None else synthetic.path
        note = f"{unlabelled} has no labels ('ans'): per-class comparison skipped"
    else:
        per_class = {
            class_name: {
                name: {
                    "real": summary(real.stats[name][real.labels == c]),
                    "synthetic": summary(synthetic.stats[name][synthetic.labels == c]),
                }
                for name in STAT_NAMES
            }
            for c, class_name in enumerate(CLASS_NAMES)
        }
    settings = {"seed": seed, "folds": folds, "max_ratio": max_ratio, "detect_k": DETECT_K}
    return RealismReport(
        auc=float(np.mean(fold_aucs)),
        auc_sd=float(np.std(fold_aucs)),
        fold_aucs=[float(a) for a in fold_aucs],
        n_real=real.n,
        n_synthetic=synthetic.n,
        n_real_used=n_r,
        n_synthetic_used=n_s,
        statistics=statistics,
        per_class=per_class,
        note=note,
        settings=settings,
    )


# --------------------------------------------------------------------------------------------------
# Writing the report

FIGURES = ("realism_images.png", "realism_statistics.png")


def write_report(report: RealismReport, real: Measured, synthetic: Measured, out: str | Path) -> list[Path]:
    """Write realism.json, the CSV tables and the two figures into ``out`` (all or none); return their paths."""
    from model.plotting import save_figure
    from model.plotting.realism import side_by_side_figure, statistics_figure

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(out, "exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / "realism.json").write_text(json.dumps(_plain(report.to_json()), indent=2, allow_nan=False))
        _write_csv(tmp / "realism_by_statistic.csv", _statistic_rows(report))
        if report.per_class is not None:
            _write_csv(tmp / "realism_by_class.csv", _class_rows(report))
        _write_csv(tmp / "realism_images.csv", _image_rows(real, "real") + _image_rows(synthetic, "synthetic"))
        names = (real.path.name, synthetic.path.name)
        save_figure(side_by_side_figure(real.samples, synthetic.samples, *names), tmp / FIGURES[0])
        save_figure(statistics_figure(real.stats, synthetic.stats, report.statistics, *names), tmp / FIGURES[1])
        out.mkdir(exist_ok=True)
        written = []
        for path in sorted(tmp.iterdir()):
            os.replace(path, out / path.name)
            written.append(out / path.name)
        if report.per_class is None:  # a per-class table of an earlier report no longer describes this one
            (out / "realism_by_class.csv").unlink(missing_ok=True)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plain(value):
    """The report as strict JSON: numpy scalars as numbers, NaN as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value.item() if isinstance(value, np.generic) else value


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _flat(prefix: str, s: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in s.items()}


def _statistic_rows(report: RealismReport) -> list[dict]:
    return [
        {"statistic": name, "unit": row["unit"], "auc": row["auc"], **_flat("real", row["real"]),
         **_flat("synthetic", row["synthetic"]), "description": row["description"]}
        for name, row in report.statistics.items()
    ]  # fmt: skip


def _class_rows(report: RealismReport) -> list[dict]:
    return [
        {"class": class_name, "statistic": name, **_flat("real", row["real"]), **_flat("synthetic", row["synthetic"])}
        for class_name, by_stat in (report.per_class or {}).items()
        for name, row in by_stat.items()
    ]


def _image_rows(measured: Measured, side: str) -> list[dict]:
    """One row per measured image: which file, its index and label, every statistic."""
    return [
        {
            "file": side,
            "index": i,
            "label": "" if measured.labels is None else int(measured.labels[i]),
            **{name: float(measured.stats[name][i]) for name in STAT_NAMES},
        }
        for i in range(measured.n)
    ]
