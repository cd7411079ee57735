"""The conditional prior network: alignment, causality, KV cache, class dropout, config and checkpoints."""

import pytest
import torch

from model.checkpoint import load_model, save_checkpoint
from model.config import from_preset
from model.errors import UserError
from model.prior import PRESETS, ConditionalPrior, PriorConfig
from model.transformer import KVCache
from tests.conftest import PRIOR_K, PRIOR_T, tiny_prior_config

K, T = PRIOR_K, PRIOR_T
tiny_config = tiny_prior_config


def cached_logits(model: ConditionalPrior, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, T, K) through the KV cache: class+SOS, then a 3-token chunk, then one token at a time."""
    B = tokens.size(0)
    cache = KVCache(model.config.layers, model.config.max_len)
    x = torch.cat([model.class_embedding(labels, B), model.sos_token.expand(B, 1, -1)], dim=1)
    outs = [model.hidden(x, 0, cache)[:, -1:]]  # SOS position -> logits of t_0
    outs.append(model.hidden(model.token_emb(tokens[:, :3]), 2, cache))  # positions 2..4 (mask path)
    for i in range(3, T - 1):
        outs.append(model.hidden(model.token_emb(tokens[:, i : i + 1]), 2 + i, cache))
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


def test_attention_dropout_follows_its_own_setting():
    def spread(model: ConditionalPrior) -> float:
        """How much two train-mode forwards of the same batch differ (0: no dropout acted)."""
        torch.manual_seed(0)
        tokens, labels = torch.randint(0, K, (4, T)), torch.arange(4)
        model.train()
        with torch.no_grad():  # dropout acts without autograd too; no graph to keep
            return float((model(tokens, labels) - model(tokens, labels)).abs().max())

    only_attn = ConditionalPrior(tiny_config(dropout=0.0, attn_dropout=0.5, class_dropout=0.0))
    assert [b.attn.attn_dropout for b in only_attn.blocks] == [0.5, 0.5] and spread(only_attn) > 1e-3
    none = ConditionalPrior(tiny_config(dropout=0.0, attn_dropout=0.0, class_dropout=0.0))
    assert spread(none) == 0.0
    branches = ConditionalPrior(tiny_config(dropout=0.1, attn_dropout=0.0))  # residual branches only: fused kernel
    assert [(b.attn.attn_dropout, b.attn.resid_dropout.p, b.mlp.dropout.p) for b in branches.blocks] == [
        (0.0, 0.1, 0.1)
    ] * 2
    assert ConditionalPrior(tiny_config(dropout=0.2)).blocks[0].attn.attn_dropout == 0.2  # None: the same as dropout
    with pytest.raises(UserError, match="attn_dropout"):
        tiny_config(attn_dropout=1.0)
    old = {k: v for k, v in tiny_config(dropout=0.2).to_dict().items() if k != "attn_dropout"}
    assert PriorConfig.from_dict(old).attn_dropout is None  # a checkpoint from before the setting keeps its dropout


# ----------------------------------------------------------------------------------------------
# Configs and checkpoints


def test_config_round_trip_and_presets():
    cfg = tiny_config()
    assert PriorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.seq_len == T and cfg.max_len == T + 2 and cfg.null_label == 10
    with pytest.raises(UserError):
        PriorConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(UserError):
        tiny_config(dim=30, heads=4)
    for name in PRESETS:
        mc = from_preset(PRESETS, name, vocab_size=512, grid_h=16, grid_w=16)
        assert mc.vocab_size == 512 and mc.grid_len == 256
        assert mc.seq_len == {"article": 256, "demo": 144}[name]  # the demo models the central 12 x 12 codes
        assert PriorConfig.from_dict(mc.to_dict()) == mc
    mc = from_preset(PRESETS, "article", vocab_size=1024, layers=2, epochs=1)
    assert (mc.dim, mc.heads, mc.layers, mc.epochs) == (256, 8, 2, 1)
    with pytest.raises(UserError):
        from_preset(PRESETS, "huge")
    with pytest.raises(UserError):
        from_preset(PRESETS, "demo", colour="red")


def test_checkpoint_round_trip_is_strict(tmp_path):
    torch.manual_seed(0)
    model = ConditionalPrior(tiny_config())
    path = tmp_path / "prior.pt"
    save_checkpoint(path, model, epoch=3)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 3 and raw["config"] == model.config.to_dict() and raw["kind"] == "prior"
    loaded, ckpt = load_model(path, ConditionalPrior)
    assert not loaded.training and loaded.head.weight is loaded.token_emb.weight
    tokens, labels = torch.randint(0, K, (2, T)), torch.tensor([1, 2])
    model.eval()
    torch.testing.assert_close(loaded(tokens, labels), model(tokens, labels), rtol=0, atol=0)

    del raw["model"]["blocks.0.ln1.weight"]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model(tmp_path / "broken.pt", ConditionalPrior)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_model(tmp_path / "junk.pt", ConditionalPrior)
    with pytest.raises(UserError):
        load_model(tmp_path / "missing.pt", ConditionalPrior)
