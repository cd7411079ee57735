import math

import numpy as np
import pytest

from model.metrics import code_counts, codebook_usage, entropy_nats, psnr


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
