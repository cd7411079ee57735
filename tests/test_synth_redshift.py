"""What redshift does to a synthetic galaxy: the cosmology against published distances and the size selection."""

import math

import numpy as np
import pytest

from model.galaxy10 import NUM_CLASSES
from model.synth_galaxies import PX
from model.synth_redshift import (
    APPARENT_SIZE,
    Z_RANGE,
    angular_diameter_distance,
    apparent_radius,
    distance_dimming,
    draw_radius,
    luminosity_distance,
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
