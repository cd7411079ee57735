"""Training the prior on token sequences: loss falls below the unigram entropy, resume is exact, bad tokens refused."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.errors import UserError
from model.train_prior import evaluate_nll, train_prior
from model.training import Hooks
from tests.conftest import PRIOR_K as K
from tests.conftest import PRIOR_T as T
from tests.conftest import tiny_prior_config as tiny_config


def synthetic_tokens(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences with structure a prior can learn: t_0 from the class, then t_i = t_{i-1} + 1 (mod K) mostly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    tokens = np.empty((n, T), dtype=np.uint16)
    tokens[:, 0] = labels
    for i in range(1, T):
        step = np.where(rng.random(n) < 0.9, 1, rng.integers(0, K, n))
        tokens[:, i] = (tokens[:, i - 1] + step) % K
    return tokens, labels


TRAIN = dict(epochs=3, batch_size=32, lr=3e-3, warmup=5, seed=0, device="cpu", log_every=4)


def test_training_lowers_loss_and_beats_unigram():
    xt, yt = synthetic_tokens(320, 0)
    xv, yv = synthetic_tokens(64, 1)
    logged: list[tuple[dict, int]] = []
    result = train_prior(
        tiny_config(dropout=0.0, **TRAIN), xt, yt, xv, yv, Hooks(log=lambda m, s: logged.append((m, s)))
    )
    h = result.history
    assert len(h) == 3 and result.metrics == h[-1]
    assert h[-1]["train_loss"] < h[0]["train_loss"] < math.log(K) + 0.5
    assert h[-1]["val_bits_per_token"] < h[-1]["unigram_bits_per_token"] - 0.5
    assert h[-1]["val_bits_per_token"] <= h[-1]["val_bits_per_token_uncond"] + 0.05
    assert ["val_bits_per_token_uncond" in m for m in h] == [False, False, True]  # 3 more passes, once
    assert h[-1]["tokens_per_s"] > 0
    epoch_logs = [s for m, s in logged if "train_loss" in m]
    assert epoch_logs == [1, 2, 3]
    assert any("step_loss" in m for m, _ in logged)
    nll = evaluate_nll(result.model, torch.from_numpy(xv.astype(np.int64)), torch.from_numpy(yv), batch_size=16)
    assert nll / math.log(2) == pytest.approx(h[-1]["val_bits_per_token"], rel=1e-5)


def test_training_resume_matches_uninterrupted_run(tmp_path):
    xt, yt = synthetic_tokens(96, 0)
    xv, yv = synthetic_tokens(32, 1)
    # dropout and class dropout on: the RNG state must be restored too
    cfg = tiny_config(epochs=2, batch_size=16, lr=3e-3, warmup=2, seed=3, device="cpu", log_every=0)
    straight = train_prior(cfg, xt, yt, xv, yv)

    class Interrupt(Exception):
        pass

    def stop_in_epoch_two(step: int, total: int) -> None:
        if step == 96 // 16 + 1:  # first step of epoch 2, after epoch 1's checkpoint
            raise Interrupt

    path = tmp_path / "prior.pt"
    with pytest.raises(Interrupt):
        train_prior(cfg, xt, yt, xv, yv, Hooks(checkpoint_path=path, progress=stop_in_epoch_two))
    assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior.pt"]  # no temp file left behind

    resumed = train_prior(cfg, xt, yt, xv, yv, Hooks(checkpoint_path=path))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for key in ("train_loss", "val_bits_per_token", "val_bits_per_token_uncond"):  # uncond: the last epoch only
        assert [m.get(key) for m in resumed.history] == [m.get(key) for m in straight.history]

    done = train_prior(cfg, xt, yt, xv, yv, Hooks(checkpoint_path=path))  # nothing left to train
    assert [m["train_loss"] for m in done.history] == [m["train_loss"] for m in straight.history]
    with pytest.raises(UserError, match="different architecture"):
        train_prior(replace(cfg, layers=1), xt, yt, xv, yv, Hooks(checkpoint_path=path))


def test_training_rejects_bad_tokens():
    xt, yt = synthetic_tokens(32, 0)
    bad = xt.astype(np.int64)
    bad[0, 0] = K
    with pytest.raises(UserError, match="tokens must be in"):
        train_prior(tiny_config(**TRAIN), bad, yt, None, None)
    with pytest.raises(UserError, match="labels must be"):
        train_prior(tiny_config(**TRAIN), xt, yt[:-1], None, None)
    with pytest.raises(UserError, match=r"\(N, 12\)"):
        train_prior(tiny_config(**TRAIN), xt[:, :-1], yt, None, None)
