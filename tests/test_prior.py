"""Tests of the conditional prior: alignment, causality, KV cache, sampler vs the article's loop, training."""

import math

import numpy as np
import pytest
import torch

from model.errors import UserError
from model.prior import (
    PRIOR_PRESETS,
    ConditionalPrior,
    KVCache,
    PriorConfig,
    PriorTrainConfig,
    load_prior,
    prior_preset,
    sample_next,
    save_prior,
    top_k_filter,
    top_p_filter,
)
from model.prior_reference import reference_generate
from model.train_prior import evaluate_nll, train_prior

K, GH, GW = 16, 3, 4  # tiny vocabulary and grid: T = 12
T = GH * GW


def tiny_config(**kw) -> PriorConfig:
    base = dict(vocab_size=K, grid_h=GH, grid_w=GW, num_classes=10, dim=32, heads=4, layers=2)
    return PriorConfig(**{**base, **kw})


@pytest.fixture
def model64() -> ConditionalPrior:
    """A tiny prior in float64 so that cached and full-prefix computations agree to ~1e-15."""
    torch.manual_seed(0)
    return ConditionalPrior(tiny_config()).double().eval()


def cached_logits(model: ConditionalPrior, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, T, K) through the KV cache: class+SOS, then a 3-token chunk, then one token at a time."""
    B = tokens.size(0)
    cache = KVCache(model.config.layers, model.config.max_len)
    x = torch.cat([model.class_embedding(labels, B), model.sos_token.expand(B, 1, -1)], dim=1)
    outs = [model._hidden(x, 0, cache)[:, -1:]]  # SOS position -> logits of t_0
    outs.append(model._hidden(model.token_emb(tokens[:, :3]), 2, cache))  # positions 2..4 (mask path)
    for i in range(3, T - 1):
        outs.append(model._hidden(model.token_emb(tokens[:, i : i + 1]), 2 + i, cache))
    return model.head(torch.cat(outs, dim=1))  # (B, T, K)


# ----------------------------------------------------------------------------------------------
# Model


def test_forward_shape_and_prefix_alignment(model64):
    tokens = torch.randint(0, K, (3, T))
    labels = torch.tensor([0, 4, 10])  # 10 = null class
    logits = model64(tokens, labels)
    assert logits.shape == (3, T, K)
    for t in (1, 5, T):  # a prefix gives the same first logits (the forward drops the last token)
        torch.testing.assert_close(model64(tokens[:, :t], labels), logits[:, :t])
    with pytest.raises(ValueError):
        model64(torch.randint(0, K, (3, T + 1)), labels)


def test_causal_mask_later_tokens_do_not_change_earlier_logits(model64):
    tokens = torch.randint(0, K, (2, T))
    labels = torch.tensor([1, 2])
    j = 6
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] + 1) % K
    a, b = model64(tokens, labels), model64(changed, labels)
    torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1], rtol=0, atol=0)  # logits i see tokens < i
    assert (a[:, j + 1 :] - b[:, j + 1 :]).abs().amax() > 1e-6


def test_kv_cache_logits_match_full_forward_at_every_position(model64):
    tokens = torch.randint(0, K, (4, T))
    for labels in (torch.tensor([0, 3, 9, 10]), None):
        full = model64(tokens, labels)
        torch.testing.assert_close(cached_logits(model64, tokens, labels), full, rtol=1e-10, atol=1e-10)


def test_kv_cache_matches_in_float32():
    torch.manual_seed(1)
    model = ConditionalPrior(tiny_config()).eval()
    tokens = torch.randint(0, K, (2, T))
    labels = torch.tensor([5, 10])
    torch.testing.assert_close(cached_logits(model, tokens, labels), model(tokens, labels), rtol=1e-4, atol=1e-5)


def test_weight_tying():
    model = ConditionalPrior(tiny_config())
    assert model.head.weight is model.token_emb.weight
    n_untied = sum(p.numel() for p in model.parameters()) + K * 32
    assert model.num_params() == n_untied - K * 32  # the (K, D) matrix counted once


def test_class_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = ConditionalPrior(tiny_config(class_dropout=0.5))
    labels = torch.arange(2000) % 10
    null = model.null_class_emb[0, 0]

    model.eval()
    emb = model.class_embedding(labels, 2000)[:, 0]  # (B, D)
    torch.testing.assert_close(emb, model.class_emb(labels))  # no dropout in eval
    model.train()
    emb = model.class_embedding(labels, 2000)[:, 0]
    is_null = (emb == null).all(dim=-1)
    assert 0.4 < is_null.float().mean() < 0.6  # ~class_dropout of the rows became null
    torch.testing.assert_close(emb[~is_null], model.class_emb(labels[~is_null]))
    # None and the null id both give the null embedding, in either mode
    model.eval()
    assert (model.class_embedding(None, 3)[:, 0] == null).all()
    assert (model.class_embedding(torch.tensor([10, 10]), 2)[:, 0] == null).all()
    with pytest.raises(IndexError):
        model.class_embedding(torch.tensor([11]), 1)  # out-of-range ids are not silently clamped


# ----------------------------------------------------------------------------------------------
# Filters and sampling


def test_top_k_filter():
    logits = torch.tensor([[1.0, 5.0, 3.0, 2.0], [0.0, -1.0, 4.0, 4.0]])
    out = top_k_filter(logits, 2)
    inf = float("-inf")
    assert torch.equal(out, torch.tensor([[inf, 5.0, 3.0, inf], [inf, inf, 4.0, 4.0]]))
    assert torch.equal(top_k_filter(logits, 0), logits)  # 0 disables
    assert torch.equal(top_k_filter(logits, 10), logits)  # k >= K keeps all


def test_top_p_filter_keeps_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()[None]
    inf = float("-inf")
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]
    assert kept(0.7) == [False, True, False, True]  # 0.5 < 0.7 <= 0.5 + 0.3
    assert kept(0.9) == [False, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    dyadic = torch.tensor([[0.25, 0.5, 0.125, 0.125]], dtype=torch.float64).log()  # exact masses
    assert torch.isfinite(top_p_filter(dyadic, 0.5)).tolist() == [[False, True, False, False]]  # 0.5 reaches 0.5
    assert torch.isfinite(top_p_filter(dyadic, 0.75)).tolist() == [[True, True, False, False]]
    out = top_p_filter(logits, 0.7)
    assert out[0, 1] == logits[0, 1] and out[0, 0] == inf  # kept logits untouched


def test_sample_next_greedy_and_filtered_draws():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert (sample_next(logits, top_k=1, generator=g) == 1).all()
    draws = sample_next(logits, top_k=2, generator=g)
    assert set(draws[:, 0].tolist()) == {1, 3}
    assert (sample_next(logits, temperature=1e-3, generator=g) == 1).all()


def test_generate_arguments_are_validated(model64):
    bad = [
        dict(temperature=0.0),
        dict(top_k=-1),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(cfg_scale=-1.0),
        dict(labels=torch.tensor([0, 11])),
        dict(labels=torch.tensor([-1, 2])),
        dict(labels=torch.tensor([0, 1, 2])),
    ]
    for kw in bad:
        kw = {"labels": torch.tensor([0, 1]), **kw}
        with pytest.raises(ValueError):
            model64.generate(2, **kw)
        with pytest.raises(ValueError):
            reference_generate(model64, 2, **kw)


# ----------------------------------------------------------------------------------------------
# Cached sampler against the article's loop

LABELS = torch.tensor([0, 3, 7, 9])
MODES = {"cond": dict(labels=LABELS), "uncond": dict(labels=None), "cfg3": dict(labels=LABELS, cfg_scale=3.0)}


@pytest.mark.parametrize("mode", MODES)
def test_greedy_cached_equals_reference(model64, mode):
    cached = model64.generate(4, **MODES[mode], top_k=1)
    reference = reference_generate(model64, 4, **MODES[mode], top_k=1)
    assert cached.shape == (4, T) and cached.dtype == torch.long
    assert torch.equal(cached, reference)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sampling", [dict(), dict(top_p=0.8, temperature=1.5), dict(top_k=5)])
def test_sampled_cached_equals_reference_with_same_seed(model64, mode, sampling):
    kw = {**MODES[mode], **sampling}
    cached = model64.generate(4, **kw, generator=torch.Generator().manual_seed(123))
    reference = reference_generate(model64, 4, **kw, generator=torch.Generator().manual_seed(123))
    assert torch.equal(cached, reference)
    other = model64.generate(4, **kw, generator=torch.Generator().manual_seed(124))
    assert not torch.equal(cached, other)  # the seed matters


def test_cfg_zero_is_unconditional_and_cfg_one_is_conditional(model64):
    seed = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    uncond = model64.generate(4, None, generator=seed())
    assert torch.equal(model64.generate(4, LABELS, cfg_scale=0.0, generator=seed()), uncond)
    cond = reference_generate(model64, 4, LABELS, generator=seed())
    assert torch.equal(model64.generate(4, LABELS, cfg_scale=1.0, generator=seed()), cond)


def test_generate_restores_mode_and_reports_progress(model64):
    model64.train()
    seen: list[int] = []
    model64.generate(2, [1, 10], cfg_scale=2.0, progress=seen.append)  # a list and the null id are accepted
    assert model64.training
    assert seen == list(range(1, T + 1))


# ----------------------------------------------------------------------------------------------
# Configs, checkpoints, training


def test_config_round_trip_and_presets():
    cfg = tiny_config()
    assert PriorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.seq_len == T and cfg.max_len == T + 2 and cfg.null_label == 10
    with pytest.raises(ValueError):
        PriorConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        tiny_config(dim=30, heads=4)
    for name in PRIOR_PRESETS:
        mc, tc = prior_preset(name, vocab_size=512, grid_h=16, grid_w=16)
        assert mc.vocab_size == 512 and mc.seq_len == 256
        assert PriorTrainConfig.from_dict(tc.to_dict()) == tc
    mc, tc = prior_preset("article", 1024, 16, 16, layers=2, epochs=1)
    assert (mc.dim, mc.heads, mc.layers, tc.epochs) == (256, 8, 2, 1)
    with pytest.raises(UserError):
        prior_preset("huge", 512, 16, 16)
    with pytest.raises(UserError):
        prior_preset("demo", 512, 16, 16, colour="red")


def test_checkpoint_round_trip_is_strict(tmp_path):
    torch.manual_seed(0)
    model = ConditionalPrior(tiny_config())
    path = tmp_path / "prior.pt"
    save_prior(path, model, epoch=3)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 3 and raw["model_config"] == model.config.to_dict()
    loaded, ckpt = load_prior(path)
    assert not loaded.training and loaded.head.weight is loaded.token_emb.weight
    tokens, labels = torch.randint(0, K, (2, T)), torch.tensor([1, 2])
    model.eval()
    torch.testing.assert_close(loaded(tokens, labels), model(tokens, labels), rtol=0, atol=0)

    del raw["model"]["blocks.0.ln1.weight"]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_prior(tmp_path / "broken.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_prior(tmp_path / "junk.pt")
    with pytest.raises(UserError):
        load_prior(tmp_path / "missing.pt")


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


TRAIN = PriorTrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup=5, seed=0, device="cpu", log_every=4)


def test_training_lowers_loss_and_beats_unigram():
    xt, yt = synthetic_tokens(320, 0)
    xv, yv = synthetic_tokens(64, 1)
    logged: list[tuple[dict, int]] = []
    result = train_prior(tiny_config(dropout=0.0), TRAIN, xt, yt, xv, yv, log=lambda m, s: logged.append((m, s)))
    h = result.history
    assert len(h) == 3 and result.final == h[-1]
    assert h[-1]["train_loss"] < h[0]["train_loss"] < math.log(K) + 0.5
    assert h[-1]["val_bits_per_token"] < h[-1]["unigram_bits_per_token"] - 0.5
    assert h[-1]["val_bits_per_token"] <= h[-1]["val_bits_per_token_uncond"] + 0.05
    assert h[-1]["tokens_per_s"] > 0
    epoch_logs = [s for m, s in logged if "train_loss" in m]
    assert epoch_logs == [1, 2, 3]
    assert any("step_loss" in m for m, _ in logged)
    nll = evaluate_nll(result.model, torch.from_numpy(xv.astype(np.int64)), torch.from_numpy(yv), batch_size=16)
    assert nll / math.log(2) == pytest.approx(h[-1]["val_bits_per_token"], rel=1e-5)


def test_training_resume_matches_uninterrupted_run(tmp_path):
    xt, yt = synthetic_tokens(96, 0)
    xv, yv = synthetic_tokens(32, 1)
    cfg = tiny_config()  # dropout and class dropout on: the RNG state must be restored too
    tc = PriorTrainConfig(epochs=2, batch_size=16, lr=3e-3, warmup=2, seed=3, device="cpu", log_every=0)
    straight = train_prior(cfg, tc, xt, yt, xv, yv)

    class Interrupt(Exception):
        pass

    def stop_in_epoch_two(step: int, total: int) -> None:
        if step == 96 // 16 + 1:  # first step of epoch 2, after epoch 1's checkpoint
            raise Interrupt

    path = tmp_path / "prior.pt"
    with pytest.raises(Interrupt):
        train_prior(cfg, tc, xt, yt, xv, yv, checkpoint_path=path, progress=stop_in_epoch_two)
    assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior.pt"]  # no temp file left behind

    resumed = train_prior(cfg, tc, xt, yt, xv, yv, checkpoint_path=path)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for key in ("train_loss", "val_bits_per_token", "val_bits_per_token_uncond"):
        assert [m[key] for m in resumed.history] == [m[key] for m in straight.history]

    done = train_prior(cfg, tc, xt, yt, xv, yv, checkpoint_path=path)  # nothing left to train
    assert [m["train_loss"] for m in done.history] == [m["train_loss"] for m in straight.history]
    with pytest.raises(UserError, match="different config"):
        train_prior(tiny_config(layers=1), tc, xt, yt, xv, yv, checkpoint_path=path)


def test_training_rejects_bad_tokens():
    xt, yt = synthetic_tokens(32, 0)
    bad = xt.astype(np.int64)
    bad[0, 0] = K
    with pytest.raises(ValueError, match="tokens must be in"):
        train_prior(tiny_config(), TRAIN, bad, yt, None, None)
    with pytest.raises(ValueError, match="labels must be"):
        train_prior(tiny_config(), TRAIN, xt, yt[:-1], None, None)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        train_prior(tiny_config(), TRAIN, xt[:, :-1], yt, None, None)
