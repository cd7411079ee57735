"""Redshift read back from an image (issue 14's evaluation): aperture photometry and a gradient-boosted regressor.

What redshift does to a galaxy's image (model.synth_redshift) shows in its light profile: the galaxy looks smaller
(angular-diameter distance), its surface brightness falls as (1+z)^-4, its light turns redder (K-correction) and the
PSF blurs more of it. So the features are the image's own photometry, measured about the centre (Galaxy10's
cut-outs are centred on the galaxy), in units that do not depend on the image side S:

    sky      median of each channel in the corners (r > 0.45 S), subtracted first
    profile  mean level of each channel in RINGS annuli of equal width out to r = S / 4 (3 * RINGS numbers)
    sizes    radii holding 25, 50 and 90 % of the total (R + G + B) light within S / 4, in units of S
    colours  log ratios R/B and G/B of the light within the half-light radius and within S / 4

A histogram gradient-boosted regressor (scikit-learn) maps them to log z, fitted on images whose redshift is known
(finite). The score that matters is a rank correlation, Spearman's rho between the redshift asked for (or
catalogued) and the one read back, so only the order of the predictions counts.

Dimension letters: N images, S image side, C colour channels (R, G, B), A annuli, F features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from model.bootstrap import bootstrap

RINGS = 12  # annuli of the profile, out to S / 4
CHUNK = 256  # images per block of the feature computation (keeps memory at ~50 MB for 128 px)
MIN_FIT = 20  # fewest images with a known redshift to fit on


def _geometry(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ring masks (A, S*S) float32 normalised to mean, sky mask (S*S,) bool, radius map (S*S,) in units of S)."""
    centre = (side - 1) / 2.0
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(yy - centre, xx - centre).ravel() / side  # (S*S,)
    edges = np.linspace(0.0, 0.25, RINGS + 1)
    rings = np.stack([(r >= lo) & (r < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])  # (A, S*S)
    for a in np.flatnonzero(~rings.any(axis=1)):  # a ring thinner than the pixels (small S): its nearest pixels
        gap = np.abs(r - (edges[a] + edges[a + 1]) / 2)
        rings[a] = gap <= gap.min() + 1e-9
    rings = rings.astype(np.float32)
    rings /= rings.sum(axis=1, keepdims=True)
    return rings, r > 0.45, r


def _radius_holding(cum: np.ndarray, radii: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) the radius at which the cumulative light (N, A) first reaches ``fraction`` of its last value."""
    total = np.maximum(cum[:, -1:], 1e-6)
    reached = cum / total >= fraction  # (N, A)
    first = np.argmax(reached, axis=1)
    return radii[first]


def features(images: np.ndarray) -> np.ndarray:
    """(N, S, S, C) uint8 images -> (N, F) float32 photometric features (see the module docstring)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected (N, S, S, 3) images, got shape {images.shape}")
    n, side = len(images), images.shape[1]
    rings, sky_mask, r = _geometry(side)
    outer = np.linspace(0.0, 0.25, RINGS + 1)[1:]  # (A,) outer radius of each ring
    edges = np.linspace(0.0, 0.25, RINGS + 1) * side
    ring_area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)  # (A,) px: light = mean level * area
    out = []
    for s in range(0, n, CHUNK):
        block = images[s : s + CHUNK].reshape(-1, side * side, 3).astype(np.float32)  # (n, S*S, C)
        sky = np.median(block[:, sky_mask], axis=1)  # (n, C)
        profile = np.einsum("ap,npc->nac", rings, block) - sky[:, None, :]  # (n, A, C) mean level above the sky
        light = np.clip(profile.sum(axis=2), 0.0, None) * ring_area  # (n, A) light in each ring
        cum = np.cumsum(light, axis=1)
        sizes = np.stack([_radius_holding(cum, outer, f) for f in (0.25, 0.5, 0.9)], axis=1)  # (n, 3)
        inside = outer[None, :] <= sizes[:, 1:2]  # (n, A) rings within the half-light radius
        flux = np.clip(profile, 1e-3, None) * ring_area[None, :, None]  # (n, A, C)
        core = (flux * inside[:, :, None]).sum(axis=1) + flux[:, 0]  # (n, C) at least the first ring
        whole = flux.sum(axis=1)  # (n, C)
        colours = np.log(np.stack([core[:, 0] / core[:, 2], core[:, 1] / core[:, 2],
                                   whole[:, 0] / whole[:, 2], whole[:, 1] / whole[:, 2]], axis=1))  # fmt: skip
        out.append(np.concatenate([profile.reshape(len(block), -1), sizes, colours], axis=1).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 3 * RINGS + 7), dtype=np.float32)


class RedshiftRegressor:
    """Image features -> redshift, fitted on the images whose redshift is finite."""

    def __init__(self, seed: int = 0, max_iter: int = 300) -> None:
        self.model = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.05, random_state=seed)

    def fit(self, images: np.ndarray, redshift: np.ndarray) -> RedshiftRegressor:
        z = np.asarray(redshift, dtype=np.float64)
        known = np.isfinite(z) & (z > 0)
        if known.sum() < MIN_FIT:
            raise ValueError(f"needs at least {MIN_FIT} images with a known redshift, got {int(known.sum())}")
        self.model.fit(features(np.asarray(images)[known]), np.log(z[known]))
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, C) uint8 -> (N,) redshift read back from each image."""
        return np.exp(self.model.predict(features(images)))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """(N,) -> (N,) ranks from 1, ties given their average rank (scipy's rankdata 'average', ~10x cheaper here:
    the bootstrap calls it thousands of times)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # (N,) each run of equal values starts here
    group = np.cumsum(first) - 1  # (N,) run number of each sorted value
    starts = np.flatnonzero(first)  # (G,)
    counts = np.diff(np.r_[starts, len(x)])  # (G,)
    ranks = np.empty(len(x))
    ranks[order] = (starts + (counts + 1) / 2.0)[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two (N,) arrays over the pairs where both are finite; NaN below 3 pairs
    or when either side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    ra, rb = average_ranks(a[keep]), average_ranks(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))  # Pearson of the ranks, without spearmanr's overhead


def rho_by_class(
    asked: np.ndarray, read: np.ndarray, labels: np.ndarray, class_ids: Sequence[int], prefix: str, seed: int = 0
) -> dict[str, float]:
    """Spearman rho of asked vs read redshift, over all images and within each class, each with its bootstrap
    interval (images resampled within their classes): ``<prefix>``, ``<prefix>_lo/_hi``, ``<prefix>_class<k>``..."""
    asked, read, labels = np.asarray(asked), np.asarray(read), np.asarray(labels)

    def statistic(rows: list[np.ndarray]) -> dict[str, float]:
        r = rows[0]
        numbers = {prefix: spearman(asked[r], read[r])}
        for k in class_ids:
            mine = r[labels[r] == k]
            numbers[f"{prefix}_class{k}"] = spearman(asked[mine], read[mine])
        return numbers

    estimate = statistic([np.arange(len(labels))])
    out = dict(estimate)
    for name, (lo, hi) in bootstrap(statistic, [labels], seed=seed).items():  # a correlation stays in [-1, 1]
        out[f"{name}_lo"], out[f"{name}_hi"] = float(np.clip(lo, -1.0, 1.0)), float(np.clip(hi, -1.0, 1.0))
    return out


def requested_redshifts(
    train_z: np.ndarray, train_labels: np.ndarray, class_ids: Sequence[int], per_class: int, seed: int = 0
) -> np.ndarray:
    """(len(class_ids) * per_class,) redshifts to ask samples for: ``per_class`` draws for each class (in order) from
    that class's own known training redshifts, so samples are asked for the redshifts real galaxies of the class
    have (and the ceiling, real test images, has the same spread). A class with none known draws from all."""
    z, labels = np.asarray(train_z, dtype=np.float64), np.asarray(train_labels)
    known = np.isfinite(z) & (z > 0)
    if not known.any():
        raise ValueError("no training image has a known redshift")
    rng = np.random.default_rng(seed)
    out = []
    for k in class_ids:
        pool = z[known & (labels == k)]
        out.append(rng.choice(pool if pool.size else z[known], per_class, replace=True))
    return np.concatenate(out)
