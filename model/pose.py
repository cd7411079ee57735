"""Pose normalisation for the prior: a galaxy's orientation on the sky says nothing of its morphology.

A prior over raster-ordered codes has to learn every class at every orientation: an edge-on disk is a line of
codes at any of 180 degrees. A prior with ``PriorConfig.pose`` instead models each image turned by the one
symmetry of the square (flips and 90-degree rotations, the dihedral group D4) that brings its major axis to
0-45 degrees from the rows (``canonical_pose``), and sampling turns each drawn image by a symmetry drawn
uniformly (``turn``). The symmetries move pixels without interpolation, the VQ-VAE trained under all eight
(``model.training.augment_square``), and the orientations of the data are spread evenly over D4, so the turned
samples are spread over the sky as the data are.

The major axis is that of the second moments of the central galaxy's light: its segment of the sky-subtracted
image, found as the realism statistics find it (``model.realism_stats.segment``), so that neither the noise nor
a star or companion beside it pulls the axis. An image without a central galaxy keeps its pose. For a round
galaxy the axis is noise, and so is its pose: nothing is lost.

Symmetry element k (0-7) of an (N, H, W, 3) image: bit 1 flips the columns, bit 2 the rows, then bit 4
transposes (``turn``). On an axis at theta degrees (x = column, y = row): a column or row flip maps it to
180 - theta, the transpose to 90 - theta.

Dimension letters: N images, H = W side (3 colour channels last).
"""

from __future__ import annotations

import numpy as np

from model.errors import UserError
from model.realism_stats import second_moments, segment

FLIP_COLUMNS, FLIP_ROWS, TRANSPOSE = 1, 2, 4  # bits of a symmetry element
SYMMETRIES = 8  # |D4|


def _check(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise UserError("images", f"pose needs (N, H, W, 3) square RGB images, got shape {images.shape}")


def major_axis_angle(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 images -> (N,) float64 angle of the central galaxy's major axis in [0, 180) degrees from
    the rows (x = column, y = row), from the second moments of its segment; NaN where there is no central galaxy."""
    _check(images)
    angles = np.full(images.shape[0], np.nan)
    for i in range(images.shape[0]):
        seg = segment(np.asarray(images[i]))
        moments = second_moments(seg.sub, seg.galaxy) if seg.galaxy is not None else None
        if moments is not None:
            _, _, ixx, iyy, ixy = moments
            angles[i] = np.degrees(0.5 * np.arctan2(2 * ixy, ixx - iyy)) % 180.0
    return angles


def canonical_elements(angles: np.ndarray) -> np.ndarray:
    """(N,) major-axis angles in [0, 180) -> (N,) the symmetry that brings each into [0, 45] degrees (NaN: none)."""
    a = np.nan_to_num(np.asarray(angles, dtype=np.float64), nan=0.0) % 180.0
    # [0, 45]: as it is; (45, 90]: transpose (90 - a); (90, 135]: column flip then transpose (a - 90);
    # (135, 180): column flip (180 - a)
    quarter = np.select([a <= 45, a <= 90, a <= 135], [0, TRANSPOSE, FLIP_COLUMNS | TRANSPOSE], FLIP_COLUMNS)
    return quarter.astype(np.int64)


def turn(images: np.ndarray, elements: np.ndarray | int) -> np.ndarray:
    """(N, H, W, 3) images, each under its symmetry element (one int: all under it) -> a new (N, H, W, 3) array."""
    _check(images)
    elements = np.broadcast_to(np.asarray(elements, dtype=np.int64), (images.shape[0],))
    if elements.size and (elements.min() < 0 or elements.max() >= SYMMETRIES):
        raise ValueError(f"symmetry elements are 0-{SYMMETRIES - 1}, got {elements.min()}-{elements.max()}")
    out = np.empty_like(images)
    for k in np.unique(elements):
        rows = np.flatnonzero(elements == k)
        x = np.asarray(images[rows])
        if k & FLIP_COLUMNS:
            x = x[:, :, ::-1]
        if k & FLIP_ROWS:
            x = x[:, ::-1]
        if k & TRANSPOSE:
            x = x.transpose(0, 2, 1, 3)
        out[rows] = x
    return out


def canonical_pose(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 images -> (the images with their major axes at 0-45 degrees, (N,) the symmetry used)."""
    elements = canonical_elements(major_axis_angle(images))
    return turn(images, elements), elements
