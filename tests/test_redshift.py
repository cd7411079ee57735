"""The redshift regressor of issue 14's evaluation: photometric features, the fit, Spearman's rho and its interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.redshift import RedshiftRegressor, features, rho_by_class, spearman

SIDE = 64


def blob(sigma_px: float, colour=(1.0, 1.0, 1.0), peak: float = 180.0, sky: float = 30.0) -> np.ndarray:
    """A centred round Gaussian galaxy of width sigma_px on a flat sky, (S, S, 3) uint8."""
    c = (SIDE - 1) / 2
    yy, xx = np.mgrid[:SIDE, :SIDE]
    g = np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * sigma_px**2))
    return np.clip(sky + peak * g[..., None] * np.asarray(colour), 0, 255).astype(np.uint8)


def test_half_light_radius_and_colour_of_a_gaussian_are_read_off():
    sigma = 5.0  # px: a 2-D Gaussian holds half its light within sigma * sqrt(2 ln 2)
    f = features(np.stack([blob(sigma, (1.0, 0.6, 0.3)), blob(sigma, (0.3, 0.6, 1.0))]))
    r50 = f[:, 36 + 1] * SIDE  # sizes follow the 3 * 12 profile numbers: r25, r50, r90
    ring = 0.25 / 12 * SIDE  # the resolution of the measured radii
    assert r50 == pytest.approx(np.full(2, sigma * math.sqrt(2 * math.log(2))), abs=ring)
    assert f[0, -1] > 0.5 and f[1, -1] < -0.5  # log(G/B) over S/4: the red blob is red, the blue one blue
    assert f[0, -2] > 1.0 and f[1, -2] < -1.0  # log(R/B)


def test_features_do_not_depend_on_how_images_are_chunked(monkeypatch):
    import model.redshift as R

    images = np.stack([blob(s) for s in np.linspace(2, 9, 7)])
    whole = features(images)
    monkeypatch.setattr(R, "CHUNK", 3)
    np.testing.assert_allclose(features(images), whole, rtol=1e-6)


def test_regressor_recovers_the_order_of_redshifts_from_size_and_dimming():
    rng = np.random.default_rng(0)
    z = rng.uniform(0.02, 0.2, 160)
    images = np.stack([blob(0.4 / zi + rng.normal(0, 0.3), peak=30 / (zi * 10) ** 0.5 * 10) for zi in z])
    fitted = RedshiftRegressor(max_iter=100).fit(images[:120], z[:120])
    assert spearman(z[120:], fitted.predict(images[120:])) > 0.9


def test_unknown_redshifts_are_left_out_of_the_fit_and_too_few_known_is_refused():
    images = np.stack([blob(s) for s in np.linspace(2, 9, 30)])
    z = np.linspace(0.2, 0.02, 30)
    z[::2] = np.nan
    with pytest.raises(ValueError, match="at least 20"):
        RedshiftRegressor().fit(images, z)  # 15 known


def test_spearman_matches_the_hand_computed_value_and_skips_missing_pairs():
    # ranks of b: 1, 2, 4, 3 -> d = 0, 0, 1, -1 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 20, 400, 30]) == pytest.approx(0.8)  # Pearson: 0.30
    assert spearman([1, 2, np.nan, 3, 4], [10, 20, 5, 40, 30]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # ties share their average rank: a ranks 1, 2.5, 2.5, 4; b 1, 3, 2, 4 -> Pearson of the ranks 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))


def test_rho_by_class_names_every_class_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 60)
    asked = rng.uniform(0, 1, 120)
    read = np.where(labels == 0, asked + rng.normal(0, 0.1, 120), rng.uniform(0, 1, 120))  # class 1: no signal
    out = rho_by_class(asked, read, labels, [0, 1], "rho")
    assert out["rho_class0"] > 0.9 and abs(out["rho_class1"]) < 0.3
    for name in ("rho", "rho_class0", "rho_class1"):
        assert out[f"{name}_lo"] <= out[name] <= out[f"{name}_hi"], name
    assert out["rho_class1_lo"] < 0 < out["rho_class1_hi"]


def test_small_images_have_every_ring_measured():
    # at 32 px the innermost ring (r < 0.67 px) holds no pixel centre: it is read from the nearest pixels
    small = np.stack([blob(s)[16:48, 16:48] for s in (1.5, 3.0)])
    f = features(small)
    assert np.isfinite(f).all()
    assert f[0, 0] > f[0, 3 * 3]  # the core is brighter than the third ring


def test_rho_intervals_stay_within_minus_one_and_one():
    # eight images, two swapped: rho 0.976, and the bias-moved bootstrap interval would reach past 1
    asked = np.arange(8.0)
    read = asked[[1, 0, 2, 3, 4, 5, 6, 7]]
    out = rho_by_class(asked, read, np.zeros(8, int), [0], "rho")
    assert out["rho"] == pytest.approx(1 - 6 * 2 / (8 * 63))
    assert -1.0 <= out["rho_lo"] <= out["rho"] <= out["rho_hi"] <= 1.0
