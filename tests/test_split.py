"""The stratified train/val/test split (model.data.stratified_split): counts by hand, determinism, disjointness."""

from __future__ import annotations

import numpy as np
import pytest

from model.data import stratified_split


def counts(split: np.ndarray, labels: np.ndarray, c: int) -> list[int]:
    """(train, val, test) sizes of class c."""
    return np.bincount(split[labels == c], minlength=3).tolist()


def test_each_class_is_split_by_the_fractions_with_rounding_by_hand():
    # class sizes 10, 7, 3 (interleaved) with fractions 0.6 / 0.25 / 0.15:
    #   10 -> round(6.0) = 6 train, round(2.5) = 2 val (round half to even), 2 test
    #    7 -> round(4.2) = 4 train, round(1.75) = 2 val, 1 test
    #    3 -> round(1.8) = 2 train, round(0.75) = 1 val, 0 test
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)[np.random.default_rng(0).permutation(20)]
    split = stratified_split(labels, seed=3, fractions=(0.6, 0.25, 0.15))
    assert split.shape == (20,) and split.dtype == np.uint8
    assert counts(split, labels, 0) == [6, 2, 2]
    assert counts(split, labels, 1) == [4, 2, 1]
    assert counts(split, labels, 2) == [2, 1, 0]


def test_default_fractions_are_80_10_10():
    labels = np.repeat([4, 7], [100, 20])  # class ids need not start at 0
    split = stratified_split(labels, seed=0)
    assert counts(split, labels, 4) == [80, 10, 10] and counts(split, labels, 7) == [16, 2, 2]


def test_a_rare_class_keeps_ten_held_out_images_from_fifty_on():
    # 56 images (cigars in the 3,000-image synthetic set): 10 % would be 6 and 5, a recall in steps of 0.2;
    # from 50 images on each held-out split gets 10, out of the training share; below 50 the plain fractions
    labels = np.repeat([0, 1, 2, 3], [56, 50, 49, 300])
    split = stratified_split(labels, seed=0)
    assert counts(split, labels, 0) == [36, 10, 10]
    assert counts(split, labels, 1) == [30, 10, 10]
    assert counts(split, labels, 2) == [39, 5, 5]
    assert counts(split, labels, 3) == [240, 30, 30]
    assert counts(stratified_split(labels, 0, (0.9, 0.1, 0.0)), labels, 1) == [40, 10, 0]  # a zero share stays 0
    # training gives what it has and no more: 2 of it -> val 2 + 2, test keeps its 46
    assert counts(stratified_split(labels, 0, (0.05, 0.05, 0.9)), labels, 1) == [0, 4, 46]


def test_splits_are_disjoint_and_cover_every_image():
    labels = np.random.default_rng(1).integers(0, 5, 500)
    split = stratified_split(labels, seed=0)
    assert set(np.unique(split).tolist()) == {0, 1, 2}  # every image in exactly one of the three
    sets = [set(np.flatnonzero(split == s).tolist()) for s in range(3)]
    assert sum(len(s) for s in sets) == 500 and set().union(*sets) == set(range(500))


def test_same_seed_same_split_and_the_seed_matters():
    labels = np.repeat(np.arange(3), 40)
    a, b = stratified_split(labels, seed=11), stratified_split(labels, seed=11)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, stratified_split(labels, seed=12))
    assert not np.array_equal(a[:40], np.array([0] * 32 + [1] * 4 + [2] * 4))  # shuffled, not the first n


def test_a_zero_fraction_is_allowed():
    labels = np.repeat(np.arange(2), 10)
    split = stratified_split(labels, seed=0, fractions=(0.9, 0.1, 0.0))
    assert counts(split, labels, 0) == [9, 1, 0] and counts(split, labels, 1) == [9, 1, 0]
    assert counts(stratified_split(labels, 0, (0.0, 1.0, 0.0)), labels, 1) == [0, 10, 0]


@pytest.mark.parametrize(
    "fractions",
    [(0.8, 0.2), (0.5, 0.2, 0.2, 0.1), (0.8, 0.1, 0.2), (0.5, 0.2, 0.2), (1.2, -0.1, -0.1), (0.4, 0.4, 0.7)],
)
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match=r"^split fractions must be three non-negative numbers summing to 1"):
        stratified_split(np.zeros(10, dtype=int), 0, fractions)
