"""A prior over the central crop of the code grid: the positions it models, the border it draws from the training
grids' code frequencies, and whole grids coming back from sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import UserError
from model.prior import ConditionalPrior, PriorConfig, centre_index
from model.sampling import sample
from model.train_prior import train_prior
from tasks.registry import tokenizer_scope
from tests.test_sampling_batches import allowed_tokens, forcing_prior, tiny_vqvae


def test_centre_positions_are_the_middle_of_the_grid():
    config = PriorConfig(vocab_size=8, grid_h=16, grid_w=16, crop=12)
    idx = centre_index(config)
    assert config.seq_len == 144 and config.grid_len == 256 and idx.shape == (144,)
    assert idx[0] == 2 * 16 + 2 and idx[11] == 2 * 16 + 13 and idx[12] == 3 * 16 + 2 and idx[-1] == 13 * 16 + 13
    assert centre_index(PriorConfig(vocab_size=8, grid_h=3, grid_w=4, crop=2)).tolist() == [1, 2, 5, 6]
    for bad in (-1, 17):
        with pytest.raises(UserError, match="crop must be in 0..16"):
            PriorConfig(vocab_size=8, grid_h=16, grid_w=16, crop=bad)


def test_training_learns_the_border_and_models_the_centre():
    rng = np.random.default_rng(0)
    n, K = 96, 16
    grids = np.tile(np.arange(12) % K, (n, 1)).astype(np.int64)  # 3 x 4 grid: position p holds code p
    labels = rng.integers(0, 10, n)
    grids[:, [1, 2, 5, 6]] = (labels[:, None] + np.arange(4)) % K  # the central 2 x 2 follows the class
    grids[: n // 2, 0] = 15  # position 0 holds code 0 in half the grids and code 15 in the other half
    config = PriorConfig(vocab_size=K, grid_h=3, grid_w=4, dim=32, heads=4, layers=2, crop=2, epochs=2, batch_size=16)
    config.device, config.warmup, config.log_every = "cpu", 2, 0
    result = train_prior(config, grids, labels, grids[:32], labels[:32])
    prior = result.model
    assert prior.seq_len == 4
    freq = prior.code_freq.numpy()  # (12, K)
    assert freq[0, 0] == freq[0, 15] == 0.5
    for p in (3, 4, 7, 8, 9, 10, 11):
        assert freq[p, p] == 1.0  # one code seen there: drawn always
    grids_back = prior.with_border(torch.tensor([[9, 9, 9, 9]] * 200), torch.Generator().manual_seed(0)).numpy()
    assert (grids_back[:, [1, 2, 5, 6]] == 9).all() and (grids_back[:, 3] == 3).all()
    assert 60 < (grids_back[:, 0] == 15).sum() < 140  # half and half (binomial 200, 0.5: 100 +- 7)
    with pytest.raises(UserError, match=r"tokens must be \(N, 12\)"):
        train_prior(config, grids[:, :4], labels)  # the whole grid goes in; the prior crops it


def test_sampling_returns_whole_grids_with_the_border_drawn_from_its_frequencies():
    vqvae, prior = tiny_vqvae(), forcing_prior(crop=4)  # 8 x 8 grid, the central 4 x 4 modelled
    with torch.no_grad():
        prior.code_freq.zero_()
        prior.code_freq[:, 31] = 1.0  # every border code is 31, which no class emits
    labels = [3, -1, 7, 0]
    s = sample(prior, vqvae, labels, cfg_scale=3.0, seed=1, batch_size=3)
    assert s.indices.shape == (4, 8, 8) and s.images.shape == (4, 32, 32, 3)
    centre = np.zeros((8, 8), bool)
    centre[2:6, 2:6] = True
    for i, label in enumerate(labels):
        assert set(s.indices[i][centre].tolist()) <= allowed_tokens(label), (i, label)
        assert (s.indices[i][~centre] == 31).all()


def test_crop_priors_load_strictly_and_whole_grid_priors_keep_their_keys():
    plain = ConditionalPrior(PriorConfig(vocab_size=8, grid_h=4, grid_w=4, dim=16, heads=2, layers=1))
    assert "code_freq" not in plain.state_dict()
    cropped = ConditionalPrior(PriorConfig(vocab_size=8, grid_h=4, grid_w=4, dim=16, heads=2, layers=1, crop=2))
    cropped.fit_border(torch.randint(0, 8, (10, 16)))
    again = ConditionalPrior(cropped.config)
    again.load_state_dict(cropped.state_dict())  # strict: the frequencies travel with the weights
    assert torch.equal(again.code_freq, cropped.code_freq)


def test_bits_of_a_crop_prior_compare_only_with_the_same_crop():
    assert tokenizer_scope("run1", None) == "run1"
    assert tokenizer_scope("run1", "redshift", 12) == "run1+redshift@crop12"
    assert tokenizer_scope("run1", None, 12) != tokenizer_scope("run1", None, 10) != tokenizer_scope("run1", None)
    assert tokenizer_scope("run1", "redshift", 12, pose=True) == "run1+redshift@crop12@pose"
    assert tokenizer_scope("run1", None, 12, pose=True) != tokenizer_scope("run1", None, 12)
