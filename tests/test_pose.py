"""Pose normalisation (model/pose.py) and the pose prior's sampler (model/sampling.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import UserError
from model.pose import FLIP_COLUMNS, FLIP_ROWS, TRANSPOSE, canonical_pose, major_axis_angle, turn
from model.prior import ConditionalPrior, PriorConfig
from model.sampling import sample
from tests.test_sampling_batches import tiny_vqvae

SIDE = 64


def ellipse(theta: float, side: int = SIDE, star: bool = False) -> np.ndarray:
    """(side, side, 3) uint8: an elongated Gaussian galaxy whose major axis is at theta degrees from the rows
    (x = column, y = row) on a noisy sky; ``star``: a bright star 20 px from its centre as well."""
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    t = np.radians(theta)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    img = 30 + 180 * np.exp(-((u / 9) ** 2) - (v / 3) ** 2)
    if star:
        img += 220 * np.exp(-((xx - 14) ** 2 + (yy + 14) ** 2) / 2)
    img += np.random.default_rng(int(theta * 10)).normal(0, 2, img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def angle_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between axis angles in degrees (an axis at 179 is 2 from one at 1)."""
    d = np.abs(np.asarray(a) - np.asarray(b)) % 180
    return np.minimum(d, 180 - d)


THETAS = [0.0, 20.0, 44.0, 46.0, 70.0, 95.0, 110.0, 133.0, 160.0, 178.0]


def test_major_axis_angle_of_known_ellipses_with_a_bright_star_beside_them():
    images = np.stack([ellipse(t) for t in THETAS])
    assert angle_gap(major_axis_angle(images), THETAS).max() < 1.5
    near = [0.0, 20.0, 40.0, 70.0, 95.0]  # the star lies well off these axes (at 135), a segment of its own
    with_star = np.stack([ellipse(t, star=True) for t in near])
    assert angle_gap(major_axis_angle(with_star), near).max() < 1.5
    assert np.isnan(major_axis_angle(np.full((1, SIDE, SIDE, 3), 30, np.uint8)))[0]  # no galaxy: no axis


def test_each_symmetry_moves_the_axis_as_documented():
    images = np.stack([ellipse(t) for t in THETAS])
    theta = np.array(THETAS)
    for k, expected in [
        (FLIP_COLUMNS, 180 - theta),
        (FLIP_ROWS, 180 - theta),
        (TRANSPOSE, 90 - theta),
        (FLIP_COLUMNS | TRANSPOSE, theta - 90),
        (FLIP_COLUMNS | FLIP_ROWS, theta),
    ]:
        assert angle_gap(major_axis_angle(turn(images, k)), expected % 180).max() < 1.5, k


def test_canonical_pose_brings_every_axis_within_0_to_45_degrees():
    images = np.stack([ellipse(t) for t in THETAS])
    turned, elements = canonical_pose(images)
    angles = major_axis_angle(turned)
    assert ((angles > -1.5) & (angles < 46.5) | (angles > 178.5)).all(), angles
    np.testing.assert_array_equal(turned, turn(images, elements))
    assert len(set(elements.tolist())) == 4  # every quarter of the half-turn needs its own symmetry


def test_the_eight_symmetries_are_distinct_and_each_is_undone():
    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    views = [turn(image, k) for k in range(8)]
    assert len({v.tobytes() for v in views}) == 8
    inverse = {k: k for k in range(8)}  # flips and the transpose of an element undo it, except the quarter-turns:
    inverse[FLIP_COLUMNS | TRANSPOSE], inverse[FLIP_ROWS | TRANSPOSE] = FLIP_ROWS | TRANSPOSE, FLIP_COLUMNS | TRANSPOSE
    for k, v in enumerate(views):
        np.testing.assert_array_equal(turn(v, inverse[k]), image)


def test_bad_input_is_refused():
    with pytest.raises(UserError, match="square"):
        major_axis_angle(np.zeros((2, 8, 6, 3), np.uint8))
    with pytest.raises(UserError, match="square"):
        turn(np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="0-7"):
        turn(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 8]))
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert turn(empty, 0).shape == empty.shape and canonical_pose(empty)[1].shape == (0,)


def test_a_pose_prior_draws_the_same_codes_and_turns_each_image_at_random():
    vqvae = tiny_vqvae()
    kw = dict(vocab_size=32, grid_h=8, grid_w=8, dim=16, heads=2, layers=1, dropout=0.0)
    torch.manual_seed(0)
    plain = ConditionalPrior(PriorConfig(**kw)).eval()
    posed = ConditionalPrior(PriorConfig(**kw, pose=True)).eval()
    posed.load_state_dict(plain.state_dict())
    labels = [0, 1, 2, 3, -1, 5, 6, 7, 8, 9, 4, -1, 2, 2, 2, 2]
    a, b = sample(plain, vqvae, labels, seed=3), sample(posed, vqvae, labels, seed=3)
    np.testing.assert_array_equal(a.indices, b.indices)  # the turn is drawn after every code
    np.testing.assert_array_equal(a.latents, b.latents)
    used = []
    for i in range(len(labels)):
        matches = [k for k in range(8) if np.array_equal(turn(a.images[i : i + 1], k)[0], b.images[i])]
        assert matches, i  # each image is its unturned twin under one symmetry
        used.append(matches[0])
    assert len(set(used)) >= 4  # drawn at random, not one fixed turn
    np.testing.assert_array_equal(b.images, sample(posed, vqvae, labels, seed=3).images)  # and seeded
