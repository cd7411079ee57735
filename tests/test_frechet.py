"""Fréchet distance of the judge's features (model.judge) against values computed another way.

The oracles never call scipy's sqrtm of the product S1 S2, which the code under test uses: a 2x2 closed
form worked out by hand, and the symmetric form Tr sqrt(S1 S2) = Tr sqrt(R S2 R), R = S1^(1/2), taken from
eigenvalues (numpy's eigh). The covariances do not commute, so Tr(sqrt(S1) sqrt(S2)) gives other numbers.
Shapes: N samples, F features.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import feature_stats, frechet_distance, frechet_from_features


def psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix from its eigendecomposition."""
    lam, vec = np.linalg.eigh(m)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def frechet_oracle(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr sqrt(R S2 R) with R = S1^(1/2) (symmetric, so eigh applies)."""
    r = psd_sqrt(s1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0.0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def random_spd(rng: np.random.Generator, f: int) -> np.ndarray:
    a = rng.normal(size=(f, f))
    return a @ a.T + 0.1 * np.eye(f)


def test_two_by_two_non_commuting_by_hand():
    # S1 = [[2, 1], [1, 2]], S2 = diag(1, 4): S1 S2 = [[2, 4], [1, 8]] != S2 S1 = [[2, 1], [4, 8]].
    # For a 2x2 M with positive eigenvalues, Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)):
    #   Tr(S1 S2) = 10, det(S1 S2) = 3 * 4 = 12  ->  Tr sqrt(S1 S2) = sqrt(10 + 4 sqrt(3)) = 4.1144...
    # means (1, 0) and (0, 2): ||mu1 - mu2||^2 = 5; Tr S1 + Tr S2 = 9.
    s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), np.diag([1.0, 4.0])
    mu1, mu2 = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    expected = 5 + 9 - 2 * math.sqrt(10 + 4 * math.sqrt(3))  # 5.7712...
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)  # symmetric
    # the wrong formula Tr(sqrt(S1) sqrt(S2)) = 3 (2 + sqrt 3) / (1 + sqrt 3) = 4.0981 gives 5.8038: far off
    wrong = 5 + 9 - 2 * 3 * (2 + math.sqrt(3)) / (1 + math.sqrt(3))
    assert abs(expected - wrong) > 0.03


def test_random_non_commuting_covariances_match_the_symmetric_form():
    rng = np.random.default_rng(0)
    for f in (3, 6):
        s1, s2 = random_spd(rng, f), random_spd(rng, f)
        assert not np.allclose(s1 @ s2, s2 @ s1)
        mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
        expected = frechet_oracle(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_small_distances_are_exact_not_offset_or_floored():
    # one feature, variances 1e-4 and 4e-4, equal means: 1e-4 + 4e-4 - 2 sqrt(4e-8) = 1e-4
    assert frechet_distance(np.zeros(1), np.array([[1e-4]]), np.zeros(1), np.array([[4e-4]])) == pytest.approx(
        1e-4, rel=1e-9
    )
    assert frechet_distance(0.0, 1e-4, 0.3, 1e-4) == pytest.approx(0.09, rel=1e-9)  # scalars: 0.3^2
    s = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert frechet_distance(np.ones(2), s, np.ones(2), s) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_singular_product_falls_back_to_offset_covariances():
    # S1 = w w^T with w = (0, 1, 2) and S2 = 4 u u^T with u = (1, 1, 1): S1 S2 = 12 w u^T has rank one and
    # eigenvalue 12 (u . w) = 36, so Tr sqrt(S1 S2) = 6 and the distance is 5 + 12 - 12 = 5. scipy's sqrtm of
    # this exact singular product is NaN, so the code offsets both covariances by eps * I.
    w, u = np.array([0.0, 1.0, 2.0]), np.ones(3)
    s1, s2 = np.outer(w, w), 4.0 * np.outer(u, u)
    zero = np.zeros(3)
    assert frechet_distance(zero, s1, zero, s2) == pytest.approx(5.0, abs=1e-4)  # default eps = 1e-6
    eps = 0.01
    offset = frechet_oracle(zero, s1 + eps * np.eye(3), zero, s2 + eps * np.eye(3)) - 6 * eps  # traces unshifted
    assert frechet_distance(zero, s1, zero, s2, eps=eps) == pytest.approx(offset, rel=1e-9)
    assert abs(offset - 5.0) > 1e-3


def test_mismatched_statistics_are_rejected():
    s2, s3 = np.eye(2), np.eye(3)
    with pytest.raises(ValueError, match=r"^mismatched statistics: \(2,\) vs \(3,\), \(2, 2\) vs \(2, 2\)$"):
        frechet_distance(np.zeros(2), s2, np.zeros(3), s2)
    with pytest.raises(ValueError, match=r"^mismatched statistics: \(3,\) vs \(3,\), \(2, 2\) vs \(3, 3\)$"):
        frechet_distance(np.zeros(3), s2, np.zeros(3), s3)


def test_a_covariance_with_a_negative_variance_is_rejected():
    # sqrt(-1 * 1) = i: an imaginary trace of size 1 is not rounding noise
    with pytest.raises(ValueError, match=r"^imaginary component 1 in the covariance square root$"):
        frechet_distance(np.zeros(1), np.array([[-1.0]]), np.zeros(1), np.array([[1.0]]))


def test_a_rounding_size_negative_variance_is_tolerated():
    # sqrt(-1e-10 * 1) = 1e-5 i: below the 1e-3 tolerance, so the real part (0) is used: 0 - 1e-10 + 1 - 0
    value = frechet_distance(np.zeros(1), np.array([[-1e-10]]), np.zeros(1), np.array([[1.0]]))
    assert value == pytest.approx(1.0 - 1e-10, rel=1e-12)


def test_feature_stats_by_hand():
    x = np.array([[0.0, 0.0], [2.0, 2.0], [1.0, 4.0]], dtype=np.float32)
    # mean (1, 2); deviations (-1, -2), (1, 0), (0, 2): D^T D = [[2, 2], [2, 8]], over N - 1 = 2
    mu, sigma = feature_stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, [1.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(sigma, [[1.0, 1.0], [1.0, 4.0]], rtol=1e-12)
    mu, sigma = feature_stats(np.array([[1.0, 3.0], [3.0, 3.0]]))  # N = 2 is enough
    np.testing.assert_allclose(sigma, [[2.0, 0.0], [0.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 4), (5,), (2, 3, 4)])
def test_feature_stats_needs_two_rows_of_features(shape):
    with pytest.raises(ValueError, match=r"^need \(N >= 2, F\) features, got "):
        feature_stats(np.zeros(shape))


def test_frechet_from_features_by_hand():
    x = np.array([[0.0, 0.0], [2.0, 2.0], [1.0, 4.0]])
    # same covariance, means (1, 2) and (4, 2): the covariance terms cancel, 3^2 remains
    assert frechet_from_features(x, x + [3.0, 0.0]) == pytest.approx(9.0, rel=1e-9)


def few_samples(n1: int, n2: int, f: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Two (N, F) feature sets, the first with N < F (singular covariance: sqrtm may come back complex)."""
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(n1, f)) * 10 * scale
    f2 = (rng.normal(size=(n2, f)) * rng.uniform(5, 30, f) + 1.0) * scale
    return f1, f2


def oracle_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1 = (f1 - mu1).T @ (f1 - mu1) / (len(f1) - 1)  # (F, F), unbiased
    s2 = (f2 - mu2).T @ (f2 - mu2) / (len(f2) - 1)
    return frechet_oracle(mu1, s1, mu2, s2)


@pytest.mark.parametrize("n1, n2, f", [(5, 40, 8), (3, 3, 8), (4, 4, 16)])
def test_frechet_from_few_samples_matches_the_symmetric_form(n1, n2, f):
    # here sqrtm's rounding noise shows as imaginary parts of ~1e-6 to 1e-4, which are dropped
    f1, f2 = few_samples(n1, n2, f, 1.0)
    assert frechet_from_features(f1, f2) == pytest.approx(oracle_from_features(f1, f2), rel=1e-6)


def test_frechet_of_large_features_with_few_samples():
    f1, f2 = few_samples(5, 5, 16, 10.0)  # imaginary parts of ~0.4 on a trace of ~1.6e5
    assert frechet_from_features(f1, f2) == pytest.approx(oracle_from_features(f1, f2), rel=1e-6)


def test_a_genuinely_complex_square_root_is_rejected_relative_to_the_variances():
    # S1 S2 = -4e-4 I: its square root is 0.02 i I, an imaginary part no rounding explains. The tolerance is
    # 1e-3 times the mean variance (here (40 - 4e-5) / 4, about 10): 0.01 < 0.02, so the input is refused.
    sigma1, sigma2 = np.diag([20.0, 20.0]), np.diag([-2e-5, -2e-5])
    with pytest.raises(ValueError, match="imaginary component 0.02"):
        frechet_distance(np.zeros(2), sigma1, np.zeros(2), sigma2)
