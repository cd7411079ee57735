"""Sampling: filters, guidance and the cached sampler against the article's full-prefix loop."""

import pytest
import torch

from benchmarks.reference_sampler import reference_generate
from model.errors import UserError
from model.sampling import generate, sample_next, top_k_filter, top_p_filter
from tests.conftest import PRIOR_T as T

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
        with pytest.raises(UserError):
            generate(model64, 2, **kw)
        with pytest.raises(UserError):
            reference_generate(model64, 2, **kw)


# ----------------------------------------------------------------------------------------------
# Cached sampler against the article's loop

LABELS = torch.tensor([0, 3, 7, 9])
MODES = {"cond": dict(labels=LABELS), "uncond": dict(labels=None), "cfg3": dict(labels=LABELS, cfg_scale=3.0)}


@pytest.mark.parametrize("mode", MODES)
def test_greedy_cached_equals_reference(model64, mode):
    cached = generate(model64, 4, **MODES[mode], top_k=1)
    reference = reference_generate(model64, 4, **MODES[mode], top_k=1)
    assert cached.shape == (4, T) and cached.dtype == torch.long
    assert torch.equal(cached, reference)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sampling", [dict(), dict(top_p=0.8, temperature=1.5), dict(top_k=5)])
def test_sampled_cached_equals_reference_with_same_seed(model64, mode, sampling):
    kw = {**MODES[mode], **sampling}
    cached = generate(model64, 4, **kw, generator=torch.Generator().manual_seed(123))
    reference = reference_generate(model64, 4, **kw, generator=torch.Generator().manual_seed(123))
    assert torch.equal(cached, reference)
    other = generate(model64, 4, **kw, generator=torch.Generator().manual_seed(124))
    assert not torch.equal(cached, other)  # the seed matters


def test_cfg_zero_is_unconditional_and_cfg_one_is_conditional(model64):
    seed = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    uncond = generate(model64, 4, None, generator=seed())
    assert torch.equal(generate(model64, 4, LABELS, cfg_scale=0.0, generator=seed()), uncond)
    cond = reference_generate(model64, 4, LABELS, generator=seed())
    assert torch.equal(generate(model64, 4, LABELS, cfg_scale=1.0, generator=seed()), cond)


def test_generate_restores_mode_and_reports_progress(model64):
    model64.train()
    seen: list[int] = []
    generate(model64, 2, [1, 10], cfg_scale=2.0, progress=seen.append)  # a list and the null id are accepted
    assert model64.training
    assert seen == list(range(1, T + 1))
