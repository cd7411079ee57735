"""Codebook usage, perplexity, entropy and PSNR (model.metrics) against values worked out by hand."""

import math
import warnings

import numpy as np
import pytest
import torch

from model.metrics import classification_report, code_counts, codebook_usage, conditional_accuracy, entropy_nats, psnr


def test_uniform_usage_has_perplexity_k():
    k = 16
    usage = codebook_usage(np.arange(k).repeat(5), k)
    assert usage.utilisation == 1.0
    assert usage.perplexity == pytest.approx(k)
    assert usage.effective_usage == pytest.approx(1.0)


def test_one_hot_usage_has_perplexity_one():
    usage = codebook_usage(np.full((4, 3, 3), 7), 32)
    assert usage.perplexity == pytest.approx(1.0)
    assert usage.utilisation == pytest.approx(1 / 32)
    assert usage.counts[7] == 36 and usage.counts.sum() == 36


def test_utilisation_of_known_array():
    usage = codebook_usage(np.array([[0, 0, 1], [5, 5, 5]]), 10)
    assert usage.utilisation == pytest.approx(0.3)
    # p = (2/6, 1/6, 3/6)
    h = -(2 / 6 * math.log(2 / 6) + 1 / 6 * math.log(1 / 6) + 3 / 6 * math.log(3 / 6))
    assert usage.perplexity == pytest.approx(math.exp(h))


def test_out_of_range_indices_rejected():
    with pytest.raises(ValueError):
        code_counts(np.array([0, 10]), 10)


def test_entropy_and_psnr():
    assert entropy_nats(np.array([0, 0])) == 0.0
    assert entropy_nats(np.array([1, 1])) == pytest.approx(math.log(2))
    assert psnr(4.0) == pytest.approx(0.0)
    assert psnr(0.04) == pytest.approx(20.0)


def test_code_counts_keeps_every_code_and_int64():
    counts = code_counts(torch.tensor([[0, 2], [2, 2]]), 5)  # code 4 never used: the length is still K
    assert counts.tolist() == [1, 0, 3, 0, 0] and counts.dtype == np.int64
    assert code_counts(np.zeros((0,), dtype=np.int64), 3).tolist() == [0, 0, 0]  # no indices at all
    assert code_counts(np.array([4]), 5).tolist() == [0, 0, 0, 0, 1]  # the last code is in range


@pytest.mark.parametrize("bad", [[-1, 0], [0, 5], [7]])
def test_code_counts_rejects_indices_outside_the_codebook(bad):
    with pytest.raises(ValueError, match=r"^indices outside \[0, 5\)$"):
        code_counts(np.array(bad), 5)


def test_entropy_by_hand():
    # counts 1, 1, 2 -> p = 1/4, 1/4, 1/2 -> H = 2 * (1/4) ln 4 + (1/2) ln 2 = 1.5 ln 2
    assert entropy_nats(np.array([1, 1, 2, 0])) == pytest.approx(1.5 * math.log(2), rel=1e-12)
    assert entropy_nats(np.array([0.5, 0.5])) == pytest.approx(math.log(2), rel=1e-12)  # counts need not be ints
    assert entropy_nats(np.array([3])) == 0.0
    assert entropy_nats(np.array([0, 0, 0])) == 0.0  # nothing counted


def test_entropy_is_computed_in_float64_whatever_the_counts_dtype():
    # p = (1, 3, 5) / 9; float32 arithmetic would be off by ~1e-8
    h = -sum(c / 9 * math.log(c / 9) for c in (1, 3, 5))
    assert entropy_nats(np.array([1, 3, 5], dtype=np.float32)) == pytest.approx(h, rel=1e-13)
    assert entropy_nats(torch.tensor([1.0, 3.0, 5.0]).numpy()) == pytest.approx(h, rel=1e-13)


def test_usage_by_hand_with_single_uses():
    # codes 0, 1, 2 once each, 3 twice, 4..7 unused: p = (1, 1, 1, 2) / 5
    usage = codebook_usage(np.array([0, 1, 2, 3, 3]), 8)
    h = -(3 * 0.2 * math.log(0.2) + 0.4 * math.log(0.4))
    assert usage.counts.tolist() == [1, 1, 1, 2, 0, 0, 0, 0]
    assert usage.utilisation == pytest.approx(4 / 8, rel=1e-12)
    assert usage.perplexity == pytest.approx(math.exp(h), rel=1e-12)  # 3.789...
    assert usage.effective_usage == pytest.approx(math.exp(h) / 8, rel=1e-12)


def test_psnr_by_hand():
    assert psnr(0.0) == math.inf
    assert psnr(0.5) == pytest.approx(10 * math.log10(8), rel=1e-12)  # 4 / 0.5 = 8 -> 9.03 dB
    assert psnr(4.0) == pytest.approx(0.0, abs=1e-12)  # the default data range is 2 ([-1, 1] images)
    assert psnr(0.01, data_range=1.0) == pytest.approx(20.0, rel=1e-12)  # 1 / 0.01 = 100 -> 20 dB
    assert psnr(1.0, data_range=3.0) == pytest.approx(10 * math.log10(9), rel=1e-12)


# ---------------------------------------------------------------------------------------------- judge scores


def test_classification_report_on_an_imbalanced_hand_case():
    # 8 of class 0 (6 right, 2 called 1), 2 of class 1 (1 right, 1 called 2), 1 of class 2 (right); class 3 absent
    y_true = np.array([0] * 8 + [1, 1, 2])
    y_pred = np.array([0] * 6 + [1, 1] + [1, 2, 2])
    r = classification_report(y_true, y_pred, 4)
    assert r["confusion"].tolist() == [[6, 2, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert r["confusion"].dtype == np.int64
    assert r["support"].tolist() == [8, 2, 1, 0]
    assert r["accuracy"] == pytest.approx(8 / 11, rel=1e-12)
    # precision = hits / predicted: 6/6, 1/3, 1/2, and 0 for the never-predicted class 3
    np.testing.assert_allclose(r["precision"], [1.0, 1 / 3, 0.5, 0.0], rtol=1e-12)
    # recall = hits / support: 6/8, 1/2, 1/1, and 0 for the absent class 3
    np.testing.assert_allclose(r["recall"], [0.75, 0.5, 1.0, 0.0], rtol=1e-12)
    # balanced accuracy: mean recall over the classes present = (0.75 + 0.5 + 1) / 3 = 0.75, not 8/11
    balanced = r["recall"][r["support"] > 0].mean()
    assert balanced == pytest.approx(0.75, rel=1e-12) and r["accuracy"] != pytest.approx(balanced)


def test_classification_report_of_one_sample_and_of_none():
    r = classification_report(np.array([2]), np.array([2]), 3)  # one class predicted exactly once
    assert r["accuracy"] == 1.0
    assert r["precision"].tolist() == [0.0, 0.0, 1.0] and r["recall"].tolist() == [0.0, 0.0, 1.0]
    empty = classification_report(np.array([], dtype=int), np.array([], dtype=int), 3)
    assert empty["accuracy"] == 0.0 and empty["confusion"].sum() == 0
    assert empty["precision"].tolist() == [0.0] * 3 and empty["recall"].tolist() == [0.0] * 3


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([0, 3], [0, 1], r"^y_true outside \[0, 3\)$"),
        ([-1, 0], [0, 1], r"^y_true outside"),
        ([0, 1], [0, 3], r"^y_pred outside \[0, 3\)$"),
        ([0, 1], [-1, 1], r"^y_pred outside"),
    ],
)
def test_classification_report_rejects_labels_outside_the_classes(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        classification_report(np.array(y_true), np.array(y_pred), 3)


def test_conditional_accuracy_by_hand_without_warnings():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    targets = np.array([0, 1, 2, 2, 0])  # judged 0, 1, 1, 2, 0: one miss in class 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an absent class is NaN by choice, not by a mean of nothing
        per_class, overall = conditional_accuracy(probs, targets, 4)
        np.testing.assert_allclose(per_class[:3], [1.0, 1.0, 0.5], rtol=1e-12)
        assert np.isnan(per_class[3]) and overall == pytest.approx(2.5 / 3, rel=1e-12)  # balanced, not 4 of 5
        per_class, overall = conditional_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 3)
        assert np.isnan(per_class).all() and math.isnan(overall)
    # balanced over the requested classes: mean of the per-class accuracies = (1 + 1 + 0.5) / 3
    assert np.nanmean(conditional_accuracy(probs, targets, 4)[0]) == pytest.approx(2.5 / 3, rel=1e-12)
