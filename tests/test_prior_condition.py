"""Continuous conditioning of the prior (SPEC P6): Fourier features, the null vector, guidance on each condition,
and a class-only prior that loads and samples exactly as before the condition existed."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from benchmarks.reference_sampler import reference_generate
from model.checkpoint import load_model
from model.errors import UserError
from model.prior import ConditionalPrior, PriorConfig
from model.sampling import generate
from model.train_prior import condition_range, read_condition_column, train_prior
from model.transformer import FourierFeatures
from tests.conftest import PRIOR_K as K
from tests.conftest import PRIOR_T as T
from tests.conftest import tiny_prior_config

NULL = 10  # the null class id of the tiny configs (10 classes)


def conditioned(**kw) -> PriorConfig:
    """The tiny prior conditioned on redshift over (0, 0.4)."""
    return tiny_prior_config(condition="redshift", condition_range=(0.0, 0.4), **kw)


# ----------------------------------------------------------------------------------------------
# Fourier features


def test_fourier_features_follow_the_documented_formula():
    ff = FourierFeatures((1.0, 3.0), 3, 5)  # frequencies 0.5, 1, 2 cycles per range
    x = torch.tensor([1.0, 1.5, 3.0, 0.0, 7.0], dtype=torch.float64)  # u = 0, 0.25, 1, clamped 0, clamped 1
    r = math.sqrt(0.5)
    expected = torch.tensor(
        [  # sin(pi u), sin(2 pi u), sin(4 pi u), cos(pi u), cos(2 pi u), cos(4 pi u), worked by hand
            [0, 0, 0, 1, 1, 1],
            [r, 1, 0, r, 0, -1],
            [0, 0, 0, -1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, -1, 1, 1],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(ff.features(x), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(ff.normalise(x), torch.tensor([0, 0.25, 1, 0, 1], dtype=torch.float64))
    assert ff.double()(x).shape == (5, 5)
    assert "freqs" not in ff.state_dict()  # derived from the config, never stored


def test_fourier_embedding_is_deterministic_per_seed_and_stored_as_documented():
    def build(seed: int) -> ConditionalPrior:
        torch.manual_seed(seed)
        return ConditionalPrior(conditioned()).eval()

    a, b, c = build(0), build(0), build(1)
    z = torch.tensor([0.05, 0.2, 0.35])
    torch.testing.assert_close(a.condition_emb(z), b.condition_emb(z), rtol=0, atol=0)
    assert not torch.equal(a.condition_emb(z), c.condition_emb(z))
    assert a.condition_emb(z).shape == (3, 32)
    class_only = ConditionalPrior(tiny_prior_config())
    extra = set(a.state_dict()) - set(class_only.state_dict())
    assert extra == {"condition_emb.proj.weight", "condition_emb.proj.bias", "null_condition_emb"}
    assert set(class_only.state_dict()) <= set(a.state_dict())


# ----------------------------------------------------------------------------------------------
# The null vector


def test_nan_and_condition_dropout_give_the_null_vector():
    torch.manual_seed(0)
    model = ConditionalPrior(conditioned(condition_dropout=0.5)).eval()
    null = model.null_condition_emb[0, 0]
    z = torch.tensor([0.1, float("nan"), 0.3])
    emb = model.condition_embedding(z, 3)[:, 0]  # (3, D)
    assert torch.equal(emb[1], null)
    torch.testing.assert_close(emb[[0, 2]], model.condition_emb(z[[0, 2]]))  # no dropout in eval mode
    assert (model.condition_embedding(None, 2)[:, 0] == null).all()
    assert torch.isfinite(model(torch.randint(0, K, (3, T)), torch.tensor([1, 2, 3]), z)).all()

    model.train()
    emb = model.condition_embedding(torch.full((2000,), 0.2), 2000)[:, 0]
    assert 0.45 < (emb == null).all(dim=-1).float().mean() < 0.55


def test_class_and_condition_dropout_are_independent():
    torch.manual_seed(0)
    model = ConditionalPrior(conditioned(class_dropout=0.5, condition_dropout=0.5)).train()
    n = 4000
    start = model.start_embedding(torch.full((n,), 3), torch.full((n,), 0.2), n)[:, 0]  # (n, D)
    cls, nul_c = model.class_emb.weight[3], model.null_class_emb[0, 0]
    z, nul_z = model.condition_emb(torch.tensor([0.2]))[0], model.null_condition_emb[0, 0]
    fractions = []
    for a in (cls, nul_c):
        for b in (z, nul_z):
            fractions.append(float(torch.isclose(start, (a + b)[None]).all(dim=-1).float().mean()))
    assert sum(fractions) == pytest.approx(1.0)  # every row is one of the four combinations
    assert all(0.22 < f < 0.28 for f in fractions), fractions  # each 1/4: independent coins


# ----------------------------------------------------------------------------------------------
# A class-only prior is the prior of before


OLD_CONFIG = {  # PriorConfig(vocab_size=16, grid_h=3, grid_w=4, dim=32, heads=4, layers=2).to_dict() before P6
    "vocab_size": 16,
    "grid_h": 3,
    "grid_w": 4,
    "num_classes": 10,
    "dim": 32,
    "heads": 4,
    "layers": 2,
    "dropout": 0.1,
    "class_dropout": 0.1,
    "epochs": 30,
    "batch_size": 64,
    "lr": 0.0003,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.05,
    "warmup": 200,
    "grad_clip": 1.0,
    "seed": 0,
    "device": None,
    "bf16": True,
    "eval_batch_size": 128,
    "log_every": 50,
}
# recorded with the code before P6 (commit a2efe5e): torch.manual_seed(0); ConditionalPrior(config).eval()
OLD_LOGITS_0 = [-0.069111, -0.185164, -0.212987, 0.171919]  # logits[0, 0, :4] of tokens arange(24) % 16, labels 3, 10
OLD_LOGITS_1 = [0.426583, -0.06909, -0.102468, -0.052863]  # logits[1, 5, :4]
OLD_CFG3 = [  # generate(labels [0, 3, 7, 9], cfg_scale 3, seed 5)
    [14, 14, 14, 1, 4, 3, 12, 8, 12, 12, 15, 13],
    [6, 6, 4, 1, 13, 4, 9, 11, 5, 0, 6, 4],
    [15, 13, 10, 13, 0, 11, 8, 5, 13, 13, 9, 15],
    [15, 13, 4, 4, 13, 9, 7, 7, 6, 13, 5, 13],
]
OLD_UNCOND = [[14, 14, 14, 13, 14, 10, 6, 13, 4, 0, 3, 11], [6, 15, 14, 13, 4, 4, 1, 4, 13, 13, 15, 9]]  # seed 5


def test_checkpoint_from_before_the_condition_loads_and_samples_as_before(tmp_path):
    torch.manual_seed(0)
    weights = ConditionalPrior(PriorConfig(**OLD_CONFIG)).state_dict()
    old_keys = {"class_emb.weight", "head.weight", "ln_f.bias", "ln_f.weight", "null_class_emb", "pos_emb.weight"}
    old_keys |= {"sos_token", "token_emb.weight"}
    old_keys |= {f"blocks.{i}.{p}" for i in range(2) for p in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")}
    for i in range(2):
        for p in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"):
            old_keys |= {f"blocks.{i}.{p}.weight", f"blocks.{i}.{p}.bias"}
    assert set(weights) == old_keys  # no new key in a class-only prior
    torch.save({"kind": "prior", "config": OLD_CONFIG, "model": weights}, tmp_path / "old.pt")  # the old format

    model, _ = load_model(tmp_path / "old.pt", ConditionalPrior)  # strict: would fail on a missing key
    assert model.config.condition is None
    tokens = torch.arange(24).reshape(2, 12) % 16
    with torch.no_grad():
        logits = model(tokens, torch.tensor([3, NULL]))
    torch.testing.assert_close(logits[0, 0, :4], torch.tensor(OLD_LOGITS_0), atol=2e-6, rtol=0)
    torch.testing.assert_close(logits[1, 5, :4], torch.tensor(OLD_LOGITS_1), atol=2e-6, rtol=0)
    cfg3 = generate(model, 4, torch.tensor([0, 3, 7, 9]), cfg_scale=3.0, generator=torch.Generator().manual_seed(5))
    assert cfg3.tolist() == OLD_CFG3
    assert generate(model, 2, None, generator=torch.Generator().manual_seed(5)).tolist() == OLD_UNCOND
    nan = torch.full((2,), float("nan"))  # "no value" is accepted by a class-only prior and changes nothing
    assert generate(model, 2, None, condition_values=nan, generator=torch.Generator().manual_seed(5)).tolist() == (
        OLD_UNCOND
    )
    with pytest.raises(UserError, match="trained without a condition"):
        generate(model, 2, [1, 2], condition_values=[0.1, 0.2])


# ----------------------------------------------------------------------------------------------
# Guidance on each condition


@pytest.fixture
def model64c():
    """A random conditioned tiny prior in float64, its condition made strong enough to matter."""
    torch.manual_seed(0)
    model = ConditionalPrior(conditioned()).double().eval()
    with torch.no_grad():
        model.condition_emb.proj.weight.mul_(50.0)
        model.null_condition_emb.mul_(50.0)
    return model


ROWS = {  # (labels, redshifts): the pair, the class alone, the value alone, and a mix of the three
    "pair": ([0, 3, 7, 9], [0.05, 0.1, 0.2, 0.39]),
    "class alone": ([0, 3, 7, 9], [float("nan")] * 4),
    "z alone": ([NULL] * 4, [0.05, 0.1, 0.2, 0.39]),
    "z alone, no labels": (None, [0.05, 0.1, 0.2, 0.39]),
    "mixed": ([0, NULL, 2, 3], [0.05, 0.1, float("nan"), 0.39]),
}


def rows_of(name: str) -> tuple[torch.Tensor | None, torch.Tensor]:
    labels, z = ROWS[name]
    return (None if labels is None else torch.tensor(labels)), torch.tensor(z, dtype=torch.float64)


@pytest.mark.parametrize("rows", ROWS)
def test_guided_cached_sampler_equals_full_prefix_reference(z_prior, rows):
    model = copy.deepcopy(z_prior.model).double()  # trained: its tokens depend on both conditions
    labels, z = rows_of(rows)
    for cfg in (3.0, 1.0):
        kw = dict(cfg_scale=cfg, top_p=0.9)
        cached = generate(model, 4, labels, condition_values=z, generator=torch.Generator().manual_seed(3), **kw)
        reference = reference_generate(
            model, 4, labels, condition_values=z, generator=torch.Generator().manual_seed(3), **kw
        )
        assert torch.equal(cached, reference), (rows, cfg)


def test_guided_logits_contrast_each_condition_with_the_fully_null_row(model64c):
    """First-step logits of generate (greedy) against uncond + s * (cond - uncond) computed from two forwards."""
    s, first = 4.0, torch.zeros(4, 1, dtype=torch.long)
    uncond = model64c(first, None, None)[:, 0]  # (4, K): null class, null value
    for name in ROWS:
        labels, z = rows_of(name)
        cond = model64c(first, labels, z)[:, 0]
        want = (uncond + s * (cond - uncond)).argmax(-1)  # (4,)
        got = generate(model64c, 4, labels, condition_values=z, cfg_scale=s, top_k=1)[:, 0]
        assert torch.equal(got, want), name


# a prior trained briefly on sequences whose every token is 4 * bin(z) + (class mod 4): what it learned of each
# condition shows in the tokens (z alone fixes token // 4, the class alone token % 4)
BINS = 4


def z_tokens(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    z = rng.uniform(0.0, 0.4, n).astype(np.float32)
    bins = np.minimum((z / 0.4 * BINS).astype(int), BINS - 1)
    tokens = np.repeat((4 * bins + labels)[:, None], T, axis=1).astype(np.uint16)  # (n, T)
    z[rng.random(n) < 0.1] = np.nan  # unknown values train the null vector as well as dropout does
    return tokens, labels, z


@pytest.fixture(scope="module")
def z_prior():
    xt, yt, zt = z_tokens(512, 0)
    xv, yv, zv = z_tokens(128, 1)
    train = dict(epochs=6, batch_size=32, lr=1e-2, warmup=5, seed=0, device="cpu", log_every=0, dropout=0.0)
    config = tiny_prior_config(condition="redshift", class_dropout=0.3, condition_dropout=0.3, **train)
    result = train_prior(config, xt, yt, xv, yv, train_values=zt, val_values=zv)
    return result


def test_training_sets_the_range_and_reports_each_condition(z_prior):
    lo, hi = z_prior.model.config.condition_range
    _, _, zt = z_tokens(512, 0)
    assert (lo, hi) == pytest.approx(tuple(np.nanpercentile(zt, [0.5, 99.5])))  # robust range of the known values
    m = z_prior.metrics
    # the first token holds 2 bits of the class part and 2 of the bin (the other 11 copy it): both conditions
    # together need fewer bits than either alone, and either alone fewer than neither
    assert m["val_bits_per_token"] < min(m["val_bits_per_token_class"], m["val_bits_per_token_condition"]) - 0.05
    assert max(m["val_bits_per_token_class"], m["val_bits_per_token_condition"]) < m["val_bits_per_token_uncond"] - 0.05


def test_guidance_on_each_condition_alone(z_prior):
    model, n = z_prior.model, 32
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for b in range(BINS):  # z alone: the bin follows z, the class part is free (seen unguided: guidance sharpens)
        z = torch.full((n,), 0.4 * (b + 0.5) / BINS)
        first = generate(model, n, None, condition_values=z, cfg_scale=3.0, generator=gen())[:, 0]  # (n,)
        assert (first // 4 == b).float().mean() > 0.9, b
        first = generate(model, n, None, condition_values=z, generator=gen())[:, 0]
        assert len(set((first % 4).tolist())) >= 3
    for c in range(4):  # the class alone: the class part follows it, the bin is free
        first = generate(model, n, torch.full((n,), c), cfg_scale=3.0, generator=gen())[:, 0]
        assert (first % 4 == c).float().mean() > 0.9, c
        first = generate(model, n, torch.full((n,), c), generator=gen())[:, 0]
        assert len(set((first // 4).tolist())) >= 3
    z = torch.full((n,), 0.25)  # the pair pins both
    tokens = generate(model, n, torch.full((n,), 2), condition_values=z, cfg_scale=3.0, generator=gen())
    assert (tokens[:, 0] == 4 * 2 + 2).float().mean() > 0.9


# ----------------------------------------------------------------------------------------------
# Reading the column, and bad values


def test_condition_column_and_range_errors(tmp_path):
    n = 5
    np.save(tmp_path / "redshift.npy", np.array([0.1, np.nan, 0.2, 0.3, 0.4], np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(n, np.uint8))  # not a property
    np.save(tmp_path / "mass.npy", np.ones(n + 1, np.float32))  # another length: not a column of these images
    np.save(tmp_path / "images.npy", np.zeros((n, 2, 2, 3), np.uint8))
    column = read_condition_column(tmp_path, "redshift", n)
    assert column.dtype == np.float32 and np.isnan(column[1]) and column[3] == np.float32(0.3)
    with pytest.raises(UserError, match=r"unknown column 'labels' .*numeric columns: redshift\)"):
        read_condition_column(tmp_path, "labels", n)
    with pytest.raises(UserError, match="unknown column 'mass'"):
        read_condition_column(tmp_path, "mass", n)
    with pytest.raises(UserError, match="no spread"):
        condition_range(np.array([0.2, 0.2, np.nan]), "redshift")
    with pytest.raises(UserError, match="1 known values"):
        condition_range(np.array([0.2, np.nan]), "redshift")
    assert condition_range(np.linspace(0, 1, 201)) == pytest.approx((0.005, 0.995))


def test_conditioned_sampling_refuses_values_outside_the_trained_range(model64c):
    with pytest.raises(UserError, match=r"redshift: 0.5 is outside the trained range \[0, 0.4\]"):
        generate(model64c, 2, [1, 2], condition_values=[0.1, 0.5])
    with pytest.raises(UserError, match=r"shape \(2,\)"):
        generate(model64c, 2, [1, 2], condition_values=[0.1, 0.2, 0.3])
    with pytest.raises(UserError, match="condition_range"):
        tiny_prior_config(condition="redshift", condition_range=(0.4, 0.1))
    with pytest.raises(UserError, match="give one value per sequence"):
        train_prior(conditioned(epochs=1), *z_tokens(32, 0)[:2], None, None)
