"""What redshift does to a synthetic galaxy: the cosmology against published distances, the size selection, and
the same galaxy rendered at two redshifts measured on its images."""

import math

import numpy as np
import pytest

from model.galaxy10 import NUM_CLASSES
from model.synth import RGB_M, RGB_Q, RGB_SCALES, image_rng, render_with_redshift
from model.synth_galaxies import PX
from model.synth_redshift import (
    APPARENT_SIZE,
    Z_RANGE,
    angular_diameter_distance,
    apparent_radius,
    distance_dimming,
    draw_radius,
    luminosity_distance,
    median_radius,
)

# Flat ΛCDM, H0 = 70, Ωm = 0.3. z = 1: astropy's LambdaCDM(70, 0.3, 0.7), as tabulated in the tests of the Go
# package wmwv/cosmo (lambdacdm_test.go). z = 0.07, 0.1: the closed form D_C = (c / H0) / sqrt(ΩΛ)
# [x 2F1(1/3, 1/2; 4/3; -k x^3)] from x = 1 to 1 + z, k = Ωm / ΩΛ, evaluated once with scipy.special.hyp2f1
# (it gives astropy's z = 1 values to 1e-9).
D_A = {0.07: 275.7056173, 0.1: 380.4131706, 1.0: 1651.91440294}
D_L = {0.07: 315.6553613, 0.1: 460.2999364, 1.0: 6607.65761177}


@pytest.mark.parametrize("z", sorted(D_A))
def test_distances_match_published_values(z):
    assert angular_diameter_distance(z) == pytest.approx(D_A[z], rel=1e-5)
    assert luminosity_distance(z) == pytest.approx(D_L[z], rel=1e-5)
    assert luminosity_distance(z) == pytest.approx((1 + z) ** 2 * angular_diameter_distance(z), rel=1e-12)


def test_distances_take_arrays_and_dimming_follows_the_luminosity_distance():
    zs = np.array(sorted(D_A))
    assert np.allclose(angular_diameter_distance(zs), [D_A[z] for z in zs], rtol=1e-5)
    # flux = L / (4 pi D_L^2): moving a galaxy from z = 0.07 to 0.1 costs 5 log10(460.30 / 315.66) = 0.819 mag
    assert distance_dimming(0.1) == pytest.approx(5 * math.log10(D_L[0.1] / D_L[0.07]), abs=1e-4)
    assert distance_dimming(0.07) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("label", range(NUM_CLASSES))
def test_drawn_radii_keep_the_apparent_size_in_the_class_window(label):
    lo, hi = APPARENT_SIZE[label]
    sizes = []
    for z in (Z_RANGE[0], 0.03, 0.07, 0.15, Z_RANGE[1]):
        radii = [draw_radius(label, z, u) for u in (0.0, 0.25, 0.5, 0.75, 1.0)]
        assert np.all(np.diff(radii) >= 0)  # the quantile maps monotonically to the radius
        sizes.append([apparent_radius(r, z) / PX for r in radii])
    sizes = np.array(sizes)  # (z, u) in reference pixels
    assert np.all((sizes >= lo * (1 - 1e-6)) & (sizes <= hi * (1 + 1e-6)))
    assert np.all(np.diff(sizes[:, 2]) < 0)  # the median galaxy looks smaller further away
    assert np.all(np.diff([draw_radius(label, z, 0.5) for z in (0.03, 0.07, 0.15)]) > 0)  # and is larger (selection)


@pytest.mark.parametrize("z", [0.0, -0.1, 0.6, float("nan")])
def test_rendering_outside_the_modelled_redshifts_is_an_error(z):
    with pytest.raises(ValueError, match="redshift"):
        render_with_redshift(2, image_rng(0, 0), 32, z=z)


# ---------------------------------------------------------------- the same galaxy at two redshifts, on its images


def linear_bands(img: np.ndarray) -> np.ndarray:
    """(K, S, S) g, r, z of a rendered image: the viewer's asinh stretch inverted (JPEG and rounding left in).

    The stretch maps the mean channel intensity I to 255 asinh(Q I) / sqrt(Q) and scales every channel alike."""
    rgb = img.astype(np.float64)
    mean = rgb.mean(-1)  # (S, S)
    intensity = np.sinh(mean * math.sqrt(RGB_Q) / 255) / RGB_Q
    chans = rgb * (intensity / np.maximum(mean, 1e-9))[..., None]  # (S, S, C) before the stretch
    return ((chans - RGB_M) / RGB_SCALES).transpose(2, 0, 1)[::-1]  # (K, S, S)


def profile_measure(img: np.ndarray) -> tuple[float, float, float]:
    """(half-light radius px, mean r surface brightness inside it, g - r inside it) from azimuthal medians.

    Medians over 1-px annuli about the image centre ignore the field stars and galaxies around."""
    bands = linear_bands(img)
    s = bands.shape[1]
    y, x = np.mgrid[:s, :s] - (s - 1) / 2
    ring = np.hypot(x, y).astype(int)  # (S, S) annulus index
    n = s // 2
    prof = np.array([[np.median(b[ring == k]) for k in range(n)] for b in bands])  # (K, n)
    prof -= np.median(prof[:, -8:], axis=1, keepdims=True)  # sky from the outermost annuli
    area = np.bincount(ring.ravel(), minlength=n)[:n]
    cum = np.cumsum(prof * area, axis=1)  # (K, n) light inside each radius
    k50 = int(np.searchsorted(cum[1], cum[1].max() / 2))
    return k50 + 0.5, cum[1, k50] / area[: k50 + 1].sum(), -2.5 * math.log10(cum[0, k50] / cum[1, k50])


def test_the_same_galaxy_further_away_is_smaller_fainter_per_pixel_and_redder():
    # the same generator state and physical radius: only z differs (0.03 -> 0.12: D_A 125 -> 449 Mpc, PSF fixed)
    ratios = []
    for label in (2, 6):  # a smooth red galaxy and a spiral
        r_kpc = median_radius(label)
        for seed in range(4):
            near, far = (
                profile_measure(render_with_redshift(label, image_rng(40 + seed, label), 128, z, r_kpc)[0])
                for z in (0.03, 0.12)
            )
            ratios.append((far[0] / near[0], far[1] / near[1], far[2] - near[2]))
    size, brightness, redder = np.mean(ratios, axis=0)
    assert size < 0.6  # 125 / 449 = 0.28 before the PSF
    assert brightness < 0.85  # (1.03 / 1.12)^4 = 0.72 before the PSF spreads it further
    assert redder > 0.04  # K-correction: red light 1.3 mag, mixed 0.55 mag redder in g-r per unit z
