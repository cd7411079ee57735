"""The evaluation protocol (model.evaluation, model.bootstrap): class-balanced accuracy, Fréchet distances of like
with like in a reduced feature space, and bootstrap intervals that hold the true value as often as they say."""

from __future__ import annotations

import numpy as np
import pytest

from model.bootstrap import bootstrap, percentile_interval, stratified_resample
from model.evaluation import CEILING, FLOOR, RECON_ACC, Verdicts, acc_name, fd_name, plan, ratio_name, score
from model.galaxy10 import CLASS_NAMES
from model.metrics import balanced_frechet, balanced_hit_rate, conditional_accuracy, fit_pca


def test_balanced_accuracy_of_a_hand_made_confusion():
    # class 0: 3 of 4 right; class 1: 0 of 1; class 2: 2 of 2. Plain accuracy 5/7, balanced (3/4 + 0 + 1) / 3.
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    predicted = np.array([0, 0, 0, 2, 0, 2, 2])
    assert balanced_hit_rate(predicted == labels, labels) == pytest.approx((0.75 + 0 + 1) / 3)
    probs = np.eye(4)[predicted]  # (7, 4): one-hot verdicts, class 3 never asked for
    per_class, balanced = conditional_accuracy(probs, labels, 4)
    assert balanced == pytest.approx(7 / 12) and per_class[:3] == pytest.approx([0.75, 0.0, 1.0])
    assert np.isnan(per_class[3])
    assert np.isnan(balanced_hit_rate(np.zeros(0, bool), np.zeros(0, int)))


def test_frechet_of_identical_sets_is_zero_and_of_shifted_gaussians_the_known_value():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5000)  # (20000,)
    a = rng.normal(size=(20000, 4))
    assert balanced_frechet(a, labels, a, labels) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(mu, 4 I) in 4 dims: |mu|^2 + 4 (1 - 2)^2 = 1 + 4 + 4
    mu = np.array([1.0, 2.0, 0.0, 0.0])
    b = mu + 2.0 * rng.normal(size=(20000, 4))
    assert balanced_frechet(a, labels, b, labels) == pytest.approx(9.0, rel=0.03)


def test_pca_keeps_the_leading_directions():
    rng = np.random.default_rng(1)
    # variance 100 along x, 1 along y, 0.01 along z, then rotated: the first direction is the rotated x axis
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    features = (rng.normal(size=(4000, 3)) * [10.0, 1.0, 0.1]) @ rotation.T + 5.0
    pca = fit_pca(features, 1)
    assert abs(pca.components[:, 0] @ rotation[:, 0]) == pytest.approx(1.0, abs=1e-3)
    assert pca.explained == pytest.approx(100 / 101.01, abs=0.01)
    assert pca.project(features).shape == (4000, 1) and abs(pca.project(features).mean()) < 1e-9
    assert fit_pca(features[:3], 16).components.shape == (3, 2)  # at most N - 1 directions


def test_stratified_resample_keeps_class_counts_and_draws_within_each_class():
    labels = np.array([2, 0, 2, 1, 0, 2])
    rows = stratified_resample(labels, np.random.default_rng(0))
    assert (labels[rows] == labels).all()


def test_bootstrap_interval_holds_the_true_balanced_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    p = np.linspace(0.3, 0.9, 10)  # each class's true recall: true balanced accuracy = p.mean()
    labels = np.repeat(np.arange(10), 30)
    covered, widths = 0, []
    for trial in range(120):
        hit = rng.random(len(labels)) < p[labels]

        def statistic(rows: list[np.ndarray], hit: np.ndarray = hit) -> dict[str, float]:
            return {"acc": balanced_hit_rate(hit[rows[0]], labels[rows[0]])}

        lo, hi = bootstrap(statistic, [labels], replicates=200, seed=trial)["acc"]
        covered += lo <= p.mean() <= hi
        widths.append(hi - lo)
    # the standard error of a balanced accuracy over 10 x 30 draws is ~0.025: a 95 % interval is ~0.1 wide
    assert 0.88 <= covered / 120 <= 0.99 and 0.07 < np.mean(widths) < 0.13


def test_percentile_interval_ignores_nan_and_bootstrap_is_seeded():
    assert percentile_interval([np.nan, 1.0, 2.0, 3.0], level=0.5) == pytest.approx((1.5, 2.5))
    assert np.isnan(percentile_interval([np.nan])).all()
    labels = np.repeat(np.arange(3), 4)
    x = np.arange(12.0)

    def mean(rows: list[np.ndarray]) -> dict[str, float]:
        return {"m": float(x[rows[0]].mean())}

    assert bootstrap(mean, [labels], 50, seed=3) == bootstrap(mean, [labels], 50, seed=3)


def test_plan_gives_floor_and_ceiling_disjoint_equal_sets():
    labels = np.array([0] * 9 + [1] * 200 + [2] * 1 + [3] * 120)
    chosen = plan(labels, 4, per_class=50, seed=0)
    floor, ceiling, pca = set(chosen.floor_rows), set(chosen.ceiling_rows), set(chosen.pca_rows)
    assert not floor & ceiling and not floor & pca and not ceiling & pca
    assert chosen.per_class.tolist() == [4, 50, 0, 50]  # at most half of each class, so both sets get as many
    assert np.bincount(labels[chosen.floor_rows], minlength=4).tolist() == [4, 50, 0, 50]
    assert np.bincount(labels[chosen.ceiling_rows], minlength=4).tolist() == [4, 50, 0, 50]
    assert len(pca) == len(labels) - 208


def verdicts(rng: np.random.Generator, labels: np.ndarray, shift: float, right: float) -> Verdicts:
    """Judge verdicts: features ~ N(class centre + shift, I) in 32 dims; a fraction ``right`` judged correctly."""
    k, n = 10, len(labels)
    centres = np.linspace(0, 3, k)[:, None] * np.ones(32)  # (K, 32)
    features = centres[labels] + shift + rng.normal(size=(n, 32))
    predicted = np.where(rng.random(n) < right, labels, (labels + 1) % k)
    return Verdicts(np.eye(k)[predicted], features, labels)


def test_score_compares_like_with_like():
    rng = np.random.default_rng(0)
    k = 10
    test_y = np.repeat(np.arange(k), 40)
    test = verdicts(rng, test_y, 0.0, 0.8)
    recon_test = verdicts(rng, test_y, 0.0, 0.6)
    floor = verdicts(rng, np.repeat(np.arange(k), 30), 0.0, 1.0)
    ceiling = verdicts(rng, np.repeat(np.arange(k), 30), 0.3, 1.0)
    # 50 samples asked per class: the FD uses the first 30 of each, as many as the floor and ceiling hold
    generated = {c: verdicts(rng, np.repeat(np.arange(k), 50), 1.0, r) for c, r in ((1.0, 0.2), (3.0, 0.5))}
    pca_features = verdicts(rng, np.repeat(np.arange(k), 50), 0.0, 1.0).features
    s = score(test, recon_test, floor, ceiling, generated, pca_features, [1.0, 3.0], 3.0, CLASS_NAMES, 100, seed=0)
    m = s.metrics
    assert s.dims == 16 and m["fd_dims"] == 16  # 300 images per set support 300 / 10 = 30; capped at 16
    sizes = {name: np.bincount(y, minlength=k).tolist() for name, (_, y) in s.projected.items() if name != "test"}
    assert sizes == {fd_name(3.0): [30] * k, FLOOR: [30] * k, CEILING: [30] * k}
    # the generated FD is recomputed from the reduced features it was measured on
    z_ref, y_ref = s.projected["test"]
    z_gen, y_gen = s.projected[fd_name(3.0)]
    assert m[fd_name(3.0)] == pytest.approx(balanced_frechet(z_gen, y_gen, z_ref, y_ref), rel=1e-9)
    # floor (same distribution) < ceiling (shifted 0.3) < generated (shifted 1): the order of the shifts
    assert m[FLOOR] < m[CEILING] < m[fd_name(3.0)]
    assert m[ratio_name(3.0)] == pytest.approx(m[fd_name(3.0)] / m[CEILING])
    # every headline number lies in its interval; the accuracies are near the fractions judged right
    for name in (acc_name(1.0), acc_name(3.0), RECON_ACC, FLOOR, CEILING, fd_name(3.0)):
        assert m[f"{name}_lo"] - 1e-9 <= m[name] <= m[f"{name}_hi"] + 1e-9, name
    assert m[acc_name(3.0)] == pytest.approx(0.5, abs=0.08) and m[RECON_ACC] == pytest.approx(0.6, abs=0.08)
    assert m["real_test_balanced_acc"] == pytest.approx(0.8, abs=0.08)
    # the summary table writes each class's numbers as the all-classes row does: accuracies .2f, FDs .3g
    from model.evaluation import summary_rows

    rows = summary_rows(s, [1.0, 3.0], 3.0, CLASS_NAMES)
    first, total = rows[0], rows[-1]
    assert first["acc cfg 3"] == f"{s.accuracy_per_class[1, 0]:.2f}" and total["acc cfg 3"].startswith(
        f"{m[acc_name(3.0)]:.2f} ["
    )
    assert first["acc real"] == f"{s.real_accuracy[0][0]:.2f}"
    assert first["FD floor (real)"] == f"{s.fd_per_class[FLOOR][0]:.3g}"
