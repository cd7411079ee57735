"""Bootstrap intervals: how far a number would move on another draw of as many images of each class.

Resampling is stratified: in every replicate each class's images are drawn with replacement, as many as the class
holds, so class counts (and with them class-balanced numbers) keep their meaning. The interval is the percentile
interval of the replicates (the 2.5th and 97.5th percentiles for 95 %), moved by the bootstrap's bias (the replicates'
mean minus the estimate): about nothing for an accuracy, but a resample repeats images, which lifts a Fréchet
distance, so uncentred percentiles could lie above the estimate.

Dimension letters: N images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from model.metrics import balanced_hit_rate

LEVEL = 0.95  # coverage of the intervals
REPLICATES = 200  # bootstrap replicates per evaluation


class Strata:
    """The classes of one labelled set, grouped once so that each resample is a single vectorised draw."""

    def __init__(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels)
        self.order = np.argsort(labels, kind="stable")  # (N,) rows grouped by class
        _, start, count = np.unique(labels[self.order], return_index=True, return_counts=True)
        self.start = np.repeat(start, count)  # (N,) first grouped position of each position's class
        self.count = np.repeat(count, count)  # (N,) size of each position's class

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """(N,) row numbers: each class's rows drawn with replacement, as many as it has, in the rows' places."""
        rows = np.empty_like(self.order)
        rows[self.order] = self.order[self.start + rng.integers(0, self.count)] if len(rows) else self.order
        return rows


def stratified_resample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) row numbers: each class's rows drawn with replacement, as many as it has, in the rows' places."""
    return Strata(labels).resample(rng)


def percentile_interval(
    replicates: Sequence[float], level: float = LEVEL, centre: float | None = None
) -> tuple[float, float]:
    """(lo, hi) percentiles of the finite replicates holding ``level`` of them between; NaNs if none is finite.

    With ``centre`` (the estimate on the original sets) the interval is moved by the bootstrap's own bias, the mean of
    the replicates minus the estimate: resampling with replacement repeats images, which shrinks covariances and so
    lifts every replicate's Fréchet distance, and the plain percentiles could then lie wholly above the estimate.
    """
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    shift = values.mean() - centre if centre is not None and np.isfinite(centre) else 0.0
    return float(np.quantile(values, tail) - shift), float(np.quantile(values, 1.0 - tail) - shift)


def bootstrap(
    statistic: Callable[[list[np.ndarray]], dict[str, float]],
    label_sets: Sequence[np.ndarray],
    replicates: int = REPLICATES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, tuple[float, float]]:
    """Bias-centred percentile intervals of every number ``statistic`` returns, over stratified resamples of each
    labelled set.

    ``statistic`` receives one array of row numbers per set of ``label_sets`` (each resampled within its classes;
    first called with every row once, for the estimate the intervals are centred on) and returns named numbers; the
    same seed gives the same intervals.
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    rng = np.random.default_rng(seed)
    strata = [Strata(labels) for labels in label_sets]
    estimate = statistic([np.arange(len(labels)) for labels in label_sets])
    values: dict[str, list[float]] = defaultdict(list)
    for _ in range(replicates):
        for name, value in statistic([s.resample(rng) for s in strata]).items():
            values[name].append(value)
    return {name: percentile_interval(v, level, estimate.get(name)) for name, v in values.items()}


def balanced_accuracy_interval(
    y_true: np.ndarray, y_pred: np.ndarray, replicates: int = REPLICATES, seed: int = 0
) -> tuple[float, float]:
    """The interval of a classifier's balanced accuracy (mean per-class recall) over resampled images."""
    hit = np.asarray(y_true) == np.asarray(y_pred)  # (N,)

    def balanced(rows: list[np.ndarray]) -> dict[str, float]:
        return {"balanced": balanced_hit_rate(hit[rows[0]], np.asarray(y_true)[rows[0]])}

    return bootstrap(balanced, [np.asarray(y_true)], replicates, seed)["balanced"]
