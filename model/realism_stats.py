"""Per-image statistics for the realism report: sky level and noise, background sources, the central galaxy.

Every image is measured as RGB uint8 at the common side S the report brings both files to; sizes are in
arcsec through the pixel scale at that side (the file's ``pxscale`` times its side over S). Brightness is in
ADU, the 0-255 pixel values, so a real and a synthetic image are compared as a viewer (or a network) sees them.

- ``sky_r/g/b``: sigma-clipped median of the border pixels (farther than ``BORDER`` x S from the centre).
- ``noise_r/g/b``: their sigma-clipped standard deviation. The first clip is at ``CLIP_SIGMA`` x 1.4826 MAD
  (robust to the sources in the border), the next ones at ``CLIP_SIGMA`` x the standard deviation of the kept
  pixels divided by ``TRUNCATED_SD`` (that of a normal cut at 3 sigma), which is also the noise reported: on
  whole-number pixels the MAD moves in steps of 0.5 ADU, too coarse for a noise of a few ADU.
- ``source_density``: segments of the detection image (the luminance, the mean of R, G and B, smoothed by a
  Gaussian of ``SMOOTH_PX`` px, minus its sky) above ``DETECT_K`` x its own clipped noise, of at least
  ``MIN_AREA_PX`` px, apart from the central galaxy's, per arcmin^2 of the whole image.
- The central galaxy is the segment nearest the centre (containing it, or within ``CENTRE_RADIUS`` x S);
  without one, its statistics are NaN. On its pixels, sky-subtracted:
  ``colour_br``, ``colour_gr``: flux ratios B/R and G/R; ``chroma``: sum of (max - min over R, G, B) over
  sum of the luminance (0 for grey, larger for saturated colours); ``axis_ratio``: b/a from the luminance-
  weighted second moments; ``r_half``: circularised half-light radius sqrt(a b) in arcsec, from the flux in
  ellipses of that shape about the centroid; ``concentration``: 5 log10(r80 / r20); ``central_brightness``:
  mean luminance above the sky in the 3x3 pixels at the centroid, ADU.

Dimension letters: N images, S side in pixels, C = 3 colour channels (R, G, B), P pixels of a segment.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BORDER = 0.4  # sky pixels lie farther than this fraction of the side from the centre
CLIP_SIGMA = 3.0  # sigma-clipping threshold, in units of 1.4826 MAD
CLIP_ITERS = 5
TRUNCATED_SD = 0.98658  # standard deviation of a unit normal cut at +-3
MAD_TO_SD = 1.4826
SMOOTH_PX = 1.0  # Gaussian smoothing of the detection image, pixels at the common side
DETECT_K = 4.0  # detection threshold, in units of the smoothed luminance's sky noise
MIN_AREA_PX = 5  # smallest segment counted as a source, pixels at the common side
CENTRE_RADIUS = 0.25  # the central galaxy's segment must come this close to the centre (fraction of the side)


@dataclass(frozen=True)
class Statistic:
    """One per-image statistic: its name, unit (for axis labels) and meaning."""

    name: str
    unit: str
    description: str


STATISTICS: tuple[Statistic, ...] = (
    *(Statistic(f"sky_{b}", "ADU", f"sky level, {b.upper()} band (clipped median of the border)") for b in "rgb"),
    *(Statistic(f"noise_{b}", "ADU", f"sky noise, {b.upper()} band (clipped standard deviation)") for b in "rgb"),
    Statistic("source_density", "per arcmin²", f"background sources above {DETECT_K:g} sigma, per arcmin²"),
    Statistic("colour_br", "flux ratio", "central galaxy B/R flux ratio"),
    Statistic("colour_gr", "flux ratio", "central galaxy G/R flux ratio"),
    Statistic("chroma", "ratio", "central galaxy colour saturation: sum(max-min of RGB) / sum(luminance)"),
    Statistic("r_half", "arcsec", "central galaxy half-light radius (circularised)"),
    Statistic("concentration", "5 log10(r80/r20)", "central galaxy concentration"),
    Statistic("axis_ratio", "b/a", "central galaxy axis ratio from second moments"),
    Statistic("central_brightness", "ADU", "central galaxy luminance above sky, mean of the central 3x3 px"),
)
STAT_NAMES: tuple[str, ...] = tuple(s.name for s in STATISTICS)


def clipped_stats(values: np.ndarray) -> tuple[float, float]:
    """(median, standard deviation) of values after iterative CLIP_SIGMA clipping (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.ones(x.size, dtype=bool)
    med = np.median(x)
    sd = MAD_TO_SD * np.median(np.abs(x - med)) or x.std()  # a MAD of 0: quantised, near-flat sky
    for _ in range(CLIP_ITERS):
        if sd == 0:
            return float(med), 0.0
        new = np.abs(x - med) <= CLIP_SIGMA * sd
        settled = np.array_equal(new, keep)
        keep = new
        med, sd = np.median(x[keep]), x[keep].std() / TRUNCATED_SD
        if settled:
            break
    return float(med), float(sd)


@functools.lru_cache(maxsize=8)
def _geometry(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance of each pixel from the centre (S, S), border mask (S, S), pixel row/col grids (2, S, S))."""
    yy, xx = np.mgrid[:side, :side].astype(np.float64)  # (S, S) each
    centre = (side - 1) / 2
    dist = np.hypot(yy - centre, xx - centre)
    return dist, dist > BORDER * side, np.stack([yy, xx])


@dataclass(frozen=True)
class Segmentation:
    """What ``segment`` finds in one image: per-band sky and noise, the sky-subtracted image, the valid sources
    and the central galaxy's pixels (None: no segment comes close enough to the centre)."""

    sky: np.ndarray  # (C,) clipped median of the border
    noise: np.ndarray  # (C,) clipped standard deviation of the border
    sub: np.ndarray  # (S, S, C) float64 above the sky
    sources: int  # valid segments (at least MIN_AREA_PX px), the central galaxy's included
    galaxy: np.ndarray | None  # (S, S) bool mask of the central galaxy's segment


def segment(image: np.ndarray) -> Segmentation:
    """Sky, noise, sources and the central galaxy of one (S, S, 3) uint8 image, as the module docstring says."""
    side = image.shape[0]
    dist, border, _ = _geometry(side)
    x = image.astype(np.float64)  # (S, S, C)
    sky, noise = np.empty(3), np.empty(3)
    for c in range(3):
        sky[c], noise[c] = clipped_stats(x[..., c][border])
    sub = x - sky  # (S, S, C) above the sky
    smooth = ndimage.gaussian_filter(sub.mean(axis=2), SMOOTH_PX)
    smooth_sky, smooth_noise = clipped_stats(smooth[border])
    segments, n = ndimage.label(smooth - smooth_sky > DETECT_K * max(smooth_noise, 1e-6))
    if not n:
        return Segmentation(sky, noise, sub, 0, None)
    ids = np.arange(1, n + 1)
    areas = np.bincount(segments.ravel(), minlength=n + 1)[1:]  # (n,)
    nearest = np.asarray(ndimage.minimum(dist, segments, ids))  # (n,) closest approach to the centre
    valid = areas >= MIN_AREA_PX
    central = valid & (nearest <= CENTRE_RADIUS * side)
    galaxy = segments == ids[central][np.argmin(nearest[central])] if central.any() else None
    return Segmentation(sky, noise, sub, int(valid.sum()), galaxy)


def measure_image(image: np.ndarray, scale: float) -> dict[str, float]:
    """Every statistic of one (S, S, 3) uint8 image whose pixels are ``scale`` arcsec wide (NaN where undefined)."""
    seg = segment(image)
    out: dict[str, float] = {}
    for c, band in enumerate("rgb"):
        out[f"sky_{band}"], out[f"noise_{band}"] = seg.sky[c], seg.noise[c]
    area_arcmin2 = (image.shape[0] * scale / 60.0) ** 2
    out["source_density"] = (seg.sources - (seg.galaxy is not None)) / area_arcmin2
    found = seg.galaxy is not None
    out.update(galaxy_stats(seg.sub, seg.galaxy, scale) if found else dict.fromkeys(GALAXY_STATS, math.nan))
    return {name: float(out[name]) if np.isfinite(out[name]) else math.nan for name in STAT_NAMES}


def second_moments(sub: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """Centroid (cy, cx) and second moments (ixx, iyy, ixy), px, of the luminance clipped at 0 on the segment
    ``mask`` (S, S) of a sky-subtracted (S, S, C) image (x = column, y = row); None when it holds no light."""
    ys, xs = np.nonzero(mask)  # (P,) each
    w = np.clip(sub[ys, xs].mean(axis=1), 0.0, None)  # (P,)
    return _moments(ys, xs, w) if w.sum() > 0 else None


def _moments(ys: np.ndarray, xs: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float, float]:
    """(cy, cx, ixx, iyy, ixy) of pixels at rows ``ys``, columns ``xs`` (P,) with weights ``w`` (P,), sum > 0."""
    total = w.sum()
    cy, cx = (w * ys).sum() / total, (w * xs).sum() / total
    dy, dx = ys - cy, xs - cx
    return cy, cx, (w * dx * dx).sum() / total, (w * dy * dy).sum() / total, (w * dx * dy).sum() / total


GALAXY_STATS = ("colour_br", "colour_gr", "chroma", "r_half", "concentration", "axis_ratio", "central_brightness")


def galaxy_stats(sub: np.ndarray, mask: np.ndarray, scale: float) -> dict[str, float]:
    """Colour, size, shape and central brightness of the segment ``mask`` (S, S) of a sky-subtracted (S, S, 3) image."""
    nan = dict.fromkeys(GALAXY_STATS, math.nan)
    ys, xs = np.nonzero(mask)  # (P,) each
    pix = sub[ys, xs]  # (P, C)
    lum = pix.mean(axis=1)  # (P,)
    w = np.clip(lum, 0.0, None)
    total = w.sum()
    if total <= 0:
        return nan
    flux = pix.sum(axis=0)  # (C,)
    out = dict(nan)
    if flux[0] > 0:
        out["colour_br"], out["colour_gr"] = flux[2] / flux[0], flux[1] / flux[0]
    if lum.sum() > 0:
        out["chroma"] = float((pix.max(axis=1) - pix.min(axis=1)).sum() / lum.sum())
    cy, cx, ixx, iyy, ixy = _moments(ys, xs, w)  # the pixels and weights above: not found twice
    dy, dx = ys - cy, xs - cx
    half_diff = math.hypot((ixx - iyy) / 2, ixy)
    major, minor = (ixx + iyy) / 2 + half_diff, max((ixx + iyy) / 2 - half_diff, 0.0)
    if major <= 0:
        return out
    q = math.sqrt(minor / major)
    out["axis_ratio"] = q
    theta = 0.5 * math.atan2(2 * ixy, ixx - iyy)  # direction of the major axis
    along, across = dx * math.cos(theta) + dy * math.sin(theta), -dx * math.sin(theta) + dy * math.cos(theta)
    radius = np.sqrt(q * along**2 + across**2 / max(q, 1e-6))  # circularised elliptical radius, px
    order = np.argsort(radius)
    grown = np.cumsum(w[order]) - w[order] / 2  # flux inside each pixel's ellipse, half its own counted
    r20, r50, r80 = np.interp(np.array([0.2, 0.5, 0.8]) * total, grown, radius[order])
    out["r_half"] = r50 * scale
    if r20 > 0:
        out["concentration"] = 5 * math.log10(r80 / r20)
    side = sub.shape[0]
    row, col = int(round(cy)), int(round(cx))
    box = sub[max(row - 1, 0) : min(row + 2, side), max(col - 1, 0) : min(col + 2, side)]  # (<=3, <=3, C)
    out["central_brightness"] = float(box.mean())
    return out


def measure_images(images: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of (N, S, S, 3) uint8 images with pixel scales (N,) arcsec: name -> (N,) float64."""
    rows = [measure_image(image, float(s)) for image, s in zip(images, scales)]
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in STAT_NAMES}
