"""Sampling filters, guidance and argument checks of the prior (model.prior), against hand-computed values.

The oracles are numbers worked out by hand in the comments, or frequencies of many seeded draws; no test
imports the function under test back as its own reference. Shapes: N rows, K vocabulary.
"""

from __future__ import annotations

import math

import pytest
import torch

from model.errors import UserError
from model.prior import ConditionalPrior, PriorConfig
from model.sampling import (
    check_sampling_args,
    generate,
    guided_logits,
    sample_next,
    top_k_filter,
    top_p_filter,
)

INF = float("-inf")


def kept(logits: torch.Tensor) -> list[list[bool]]:
    """Which entries a filter left finite."""
    return torch.isfinite(logits).tolist()


# ---------------------------------------------------------------------------------------------- top-k


def test_top_k_keeps_the_k_largest_and_leaves_them_untouched():
    logits = torch.tensor([[1.0, 5.0, 3.0, 2.0, 0.5], [0.0, -1.0, 4.0, 2.0, 3.0]])  # (N=2, K=5)
    out = top_k_filter(logits, 3)  # k between N and K: a filter reading the wrong axis keeps everything
    assert torch.equal(out, torch.tensor([[INF, 5.0, 3.0, 2.0, INF], [INF, INF, 4.0, 2.0, 3.0]]))
    assert torch.equal(top_k_filter(logits, 1), torch.tensor([[INF, 5.0, INF, INF, INF], [INF, INF, 4.0, INF, INF]]))
    assert torch.equal(top_k_filter(logits[0], 2), torch.tensor([INF, 5.0, 3.0, INF, INF]))  # one row (K,)


def test_top_k_keeps_every_tie_at_the_kth_value():
    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0]])
    assert kept(top_k_filter(logits, 1)) == [[True, False, True, False]]  # two logits share the top value
    assert kept(top_k_filter(logits, 2)) == [[True, False, True, False]]
    assert kept(top_k_filter(logits, 3)) == [[True, False, True, True]]
    flat = torch.zeros(1, 6)
    assert torch.equal(top_k_filter(flat, 2), flat)  # all tied: nothing dropped


def test_top_k_zero_or_at_least_k_disables():
    logits = torch.tensor([[1.0, 5.0, 3.0, 2.0]])
    for k in (0, 4, 10):
        assert top_k_filter(logits, k) is logits  # returned as is: no copy on every sampling step


def test_filters_work_on_any_leading_shape():
    # (B=2, T=1, K=4) logits, e.g. a forward's output; each row is filtered on its own
    probs = torch.tensor([[[0.05, 0.5, 0.15, 0.3]], [[0.7, 0.1, 0.1, 0.1]]])  # (2, 1, 4)
    # top-p 0.7: row 0 as above; row 1 sorted 0.7, 0.1, ... has mass 0.7 before its second token: one kept
    assert kept(top_p_filter(probs.log(), 0.7)) == [[[False, True, False, True]], [[True, False, False, False]]]
    assert kept(top_p_filter(probs[0, 0].log(), 0.7)) == [False, True, False, True]  # one row (K,)
    # top-2: row 1's second largest (0.1) is tied three ways, so all four are kept
    assert kept(top_k_filter(probs.log(), 2)) == [[[False, True, False, True]], [[True, True, True, True]]]


# ---------------------------------------------------------------------------------------------- top-p


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    # probabilities 0.05, 0.5, 0.15, 0.3; sorted 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95
    logits = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.3, 0.15, 0.5, 0.05]]).log()  # second row permuted
    assert kept(top_p_filter(logits, 0.4)) == [[False, True, False, False], [False, False, True, False]]
    assert kept(top_p_filter(logits, 0.7)) == [[False, True, False, True], [True, False, True, False]]
    assert kept(top_p_filter(logits, 0.9)) == [[False, True, True, True], [True, True, True, False]]
    out = top_p_filter(logits, 0.7)
    assert out[0, 1] == logits[0, 1] and out[0, 3] == logits[0, 3]  # kept logits untouched


def test_top_p_mass_exactly_reaching_p_stops_there():
    # dyadic probabilities are exact in binary: sorted 0.5, 0.25, 0.125, 0.125, mass before 0, 0.5, 0.75, 0.875
    logits = torch.tensor([[0.25, 0.5, 0.125, 0.125]], dtype=torch.float64).log()
    assert kept(top_p_filter(logits, 0.5)) == [[False, True, False, False]]  # 0.5 alone reaches 0.5
    assert kept(top_p_filter(logits, 0.75)) == [[True, True, False, False]]  # 0.5 + 0.25 reaches 0.75
    three = kept(top_p_filter(logits, 0.875))[0]  # 0.5 + 0.25 + 0.125 reaches 0.875: one of the tied 0.125s
    assert three[:2] == [True, True] and sum(three) == 3
    assert kept(top_p_filter(logits, 0.5000001)) == [[True, True, False, False]]  # just past: one more


def test_top_p_one_disables_even_for_a_negligible_token():
    # p(second) = e^-40 / (1 + e^-40): the mass before it rounds to exactly 1.0 in float32, so a filter that
    # ran at top_p = 1 would drop it; top_p = 1 must return the logits as they are
    logits = torch.tensor([[0.0, -40.0, -1.0]])
    assert top_p_filter(logits, 1.0) is logits
    assert top_p_filter(logits, 0.999999)[0, 1] == INF


# ---------------------------------------------------------------------------------------------- guidance


def test_guidance_moves_away_from_the_unconditional_logits():
    cond = torch.tensor([[2.0, 0.0, 1.0]])
    uncond = torch.tensor([[1.0, 1.0, 1.0]])
    # uncond + 3 * (cond - uncond) = 1 + 3 * (1, -1, 0) = (4, -2, 1)
    assert torch.equal(guided_logits(cond, uncond, 3.0), torch.tensor([[4.0, -2.0, 1.0]]))
    # 0.5 * (cond - uncond) = (0.5, -0.5, 0): halfway between the two
    assert torch.equal(guided_logits(cond, uncond, 0.5), torch.tensor([[1.5, 0.5, 1.0]]))
    assert torch.equal(guided_logits(cond, uncond, 1.0), cond)
    assert torch.equal(guided_logits(cond, uncond, 0.0), uncond)


def _tiny_prior() -> ConditionalPrior:
    """A float64 prior with a 2x2 grid and 16 codes, its class embeddings scaled up so classes matter."""
    torch.manual_seed(0)
    config = PriorConfig(vocab_size=16, grid_h=2, grid_w=2, num_classes=3, dim=32, heads=4, layers=2, dropout=0.0)
    model = ConditionalPrior(config).double().eval()
    with torch.no_grad():
        model.class_emb.weight.mul_(50.0)
    return model


def test_guided_greedy_generation_follows_hand_combined_logits():
    """Greedy guided tokens equal argmax(u + s * (c - u)) of the full forward's logits, combined here."""
    model = _tiny_prior()
    labels = torch.tensor([0, 1, 2, 1])
    scale = 3.0
    tokens = generate(model, 4, labels, cfg_scale=scale, top_k=1)
    prefix = torch.zeros(4, 0, dtype=torch.long)  # (N, L): tokens chosen so far by the oracle
    with torch.no_grad():
        for _ in range(model.seq_len):
            x = torch.cat([prefix, torch.zeros(4, 1, dtype=torch.long)], dim=1)  # the forward drops the last
            c = model(x, labels)[:, -1]  # (N, K)
            u = model(x, None)[:, -1]
            nxt = (u + scale * (c - u)).argmax(dim=-1, keepdim=True)  # (N, 1)
            prefix = torch.cat([prefix, nxt], dim=1)
    assert torch.equal(tokens, prefix)
    plain = generate(model, 4, labels, top_k=1)  # the guidance changed something
    assert not torch.equal(tokens, plain)


# ---------------------------------------------------------------------------------------------- sampling


def test_sample_next_shape_and_greedy():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    out = sample_next(logits, top_k=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1) and out.dtype == torch.long
    assert out[:, 0].tolist() == [1, 0]


def test_temperature_divides_the_logits():
    """Frequencies of 20000 draws from logits (log 0.8, log 0.2) against p ~ (0.8, 0.2) ** (1 / temperature)."""
    n = 20000
    logits = torch.tensor([[math.log(0.8), math.log(0.2)]]).repeat(n, 1)  # (N, 2)
    # T = 2: sqrt(0.8) : sqrt(0.2) = 2 : 1 -> 2/3; T = 0.5: 0.64 : 0.04 -> 16/17; T = 1: 0.8
    for temperature, p0 in ((2.0, 2 / 3), (0.5, 16 / 17), (1.0, 0.8)):
        draws = sample_next(logits, temperature=temperature, generator=torch.Generator().manual_seed(1))
        freq = (draws == 0).double().mean().item()
        assert freq == pytest.approx(p0, abs=0.015), temperature  # 5 standard errors or more


def test_filters_apply_to_the_tempered_logits():
    """Temperature first, then top-p: at T = 10 the logits (2, 0) give (0.55, 0.45), so top-p 0.8 keeps both."""
    logits = torch.tensor([[2.0, 0.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_p=0.8, generator=g)[:, 0].tolist()) == {0}  # (0.88, 0.12): only the first
    assert set(sample_next(logits, temperature=10.0, top_p=0.8, generator=g)[:, 0].tolist()) == {0, 1}
    top2 = sample_next(torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(400, 1), top_k=2, generator=g)
    assert set(top2[:, 0].tolist()) == {1, 3}


def test_sample_next_draws_from_the_given_generator():
    logits = torch.zeros(64, 1000)  # uniform: two independent draws almost surely differ
    a = sample_next(logits, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    b = sample_next(logits, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_next(logits, generator=torch.Generator().manual_seed(6)))


# ---------------------------------------------------------------------------------------------- arguments


GOOD = dict(n=2, num_classes=10, labels=torch.tensor([0, 10]), cfg_scale=1.0, temperature=1.0, top_k=0, top_p=1.0)


@pytest.mark.parametrize(
    "change",
    [
        dict(),
        dict(n=1, labels=torch.tensor([3])),
        dict(labels=None),
        dict(labels=torch.tensor([9, 0])),  # both ends of the real classes
        dict(labels=torch.tensor([10, 10])),  # the null class
        dict(temperature=0.5),
        dict(temperature=1e-6),
        dict(top_k=1),
        dict(top_p=0.5),
        dict(top_p=1e-9),
        dict(cfg_scale=0.0),
        dict(cfg_scale=0.5),
        dict(cfg_scale=7.5),
    ],
    ids=lambda c: ",".join(f"{k}={v if not torch.is_tensor(v) else v.tolist()}" for k, v in c.items()) or "defaults",
)
def test_valid_sampling_arguments_pass(change):
    check_sampling_args(**{**GOOD, **change})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n=0, labels=None), r"^sampling: n must be >= 1, got 0$"),
        (dict(temperature=0.0), r"^sampling: temperature must be > 0, got 0.0$"),
        (dict(temperature=-1.0), r"^sampling: temperature must be > 0"),
        (dict(temperature=math.nan), r"^sampling: temperature must be > 0"),
        (dict(top_k=-1), r"^sampling: top_k must be >= 0 \(0 disables\), got -1$"),
        (dict(top_p=0.0), r"^sampling: top_p must be in \(0, 1\] \(1 disables\), got 0.0$"),
        (dict(top_p=1.5), r"^sampling: top_p must be in \(0, 1\]"),
        (dict(top_p=1.0000001), r"^sampling: top_p must be in \(0, 1\]"),
        (dict(cfg_scale=-0.5), r"^sampling: cfg_scale must be a finite number >= 0, got -0.5$"),
        (dict(cfg_scale=math.inf), r"^sampling: cfg_scale must be a finite number >= 0"),
        (dict(cfg_scale=math.nan), r"^sampling: cfg_scale must be a finite number >= 0"),
        (dict(labels=torch.tensor([0, 1, 2])), r"^sampling: labels must have shape \(2,\), got \(3,\)$"),
        (
            dict(labels=torch.tensor([0, 11])),
            r"^sampling: labels must be in \[0, 9\] \(or 10 for the null class\), got values in \[0, 11\]$",
        ),
        (dict(labels=torch.tensor([-1, 2])), r"^sampling: labels must be in \[0, 9\]"),
    ],
)
def test_bad_sampling_arguments_name_the_argument(change, message):
    with pytest.raises(UserError, match=message):
        check_sampling_args(**{**GOOD, **change})


# ---------------------------------------------------------------------------------------------- per-row settings


def test_per_row_cfg_scales_equal_each_row_sampled_alone():
    """Greedy (top-k 1) tokens do not depend on the random stream: a batch with cfg 0, 1, 3 and 9 per row gives
    each row what a call with that one scale gives it."""
    model, labels, scales = _tiny_prior(), torch.tensor([0, 1, 2, 1]), [0.0, 1.0, 3.0, 9.0]
    tokens = generate(model, 4, labels, cfg_scale=scales, top_k=1)
    for i, scale in enumerate(scales):
        assert torch.equal(tokens[i], generate(model, 1, labels[i : i + 1], cfg_scale=scale, top_k=1)[0]), scale
    assert len({tuple(t) for t in tokens[[1, 3]].tolist()}) == 2  # the scales made a difference (same class)


def test_per_row_temperatures_divide_each_rows_logits():
    """Temperature 1e-3 is greedy (the argmax row); temperature 100 is near uniform, so 20 draws of a row of 4
    codes from a 16-code vocabulary miss the greedy tokens somewhere."""
    model, labels = _tiny_prior(), torch.tensor([2] * 21)
    greedy = generate(model, 1, labels[:1], top_k=1)[0]
    tokens = generate(model, 21, labels, temperature=[1e-3] + [100.0] * 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens[0], greedy)
    assert not all(torch.equal(row, greedy) for row in tokens[1:])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(cfg_scale=[1.0, -2.0]), r"^sampling: cfg_scale must be a finite number >= 0, got -2.0$"),
        (dict(temperature=[1.0, 0.0]), r"^sampling: temperature must be > 0, got 0.0$"),
        (dict(cfg_scale=[1.0, 2.0, 3.0]), r"^sampling: cfg_scale must be one value or one per row \(2\), got 3$"),
        (dict(temperature=[]), r"^sampling: temperature must be one value or one per row \(2\), got 0$"),
    ],
)
def test_bad_per_row_settings_name_the_value(change, message):
    with pytest.raises(UserError, match=message):
        check_sampling_args(**{**GOOD, **change})
