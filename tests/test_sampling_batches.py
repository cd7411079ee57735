"""Generation (model/sampling.py): request order and conditioning across batches, model checks, token layout.

The oracle for conditioning is a prior built by hand so that each class can only produce two known
tokens: class c draws from {2c, 2c + 1}, the null class from {2C, 2C + 1} (C classes). Its single
block attends only to the class position (whose embedding alone carries a marker dimension) and copies
the class's two token directions to the output; the readout is tied to the token embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import UserError
from model.prior import ConditionalPrior, PriorConfig
from model.sampling import DEFAULT_TOP_P, decode_tokens, generate, sample
from model.utils import unit_to_uint8
from model.vqvae import VQVAE, VQVAEConfig

TINY = dict(image_size=32, widths=(8, 16), embedding_dim=8, codebook_size=32)  # grid 8x8, K = 32


def tiny_vqvae(seed: int = 0) -> VQVAE:
    """A randomly initialised 32 px VQ-VAE in eval mode: distinct codes decode to distinct images."""
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(**TINY)).eval()


def allowed_tokens(label: int, num_classes: int = 10) -> set[int]:
    """The two tokens the forcing prior may emit for ``label`` (-1: the null class)."""
    c = num_classes if label < 0 else label
    return {2 * c, 2 * c + 1}


def forcing_prior(
    vocab: int = 32, grid: int = 8, num_classes: int = 10, width: int = 64, crop: int = 0
) -> ConditionalPrior:
    """A prior whose every (modelled) token is one of ``allowed_tokens(label)``, each about equally likely."""
    assert 2 * num_classes + 2 <= vocab < width
    config = PriorConfig(
        vocab_size=vocab,
        grid_h=grid,
        grid_w=grid,
        num_classes=num_classes,
        dim=width,
        heads=1,
        layers=1,
        dropout=0.0,
        class_dropout=0.0,
        crop=crop,
    )
    prior = ConditionalPrior(config).eval()
    marker = width - 1  # only class embeddings have this dimension
    block = prior.blocks[0]
    with torch.no_grad():
        for p in prior.parameters():
            p.zero_()  # no MLP, no positions, no SOS: only what is set below
        for norm in (block.ln1, block.ln2, prior.ln_f):
            norm.weight.fill_(1.0)
        prior.token_emb.weight[:, :vocab] = 3.0 * torch.eye(vocab)  # token k embeds to 3 e_k; logit k reads dim k

        def class_vector(label: int) -> torch.Tensor:
            v = torch.zeros(width)
            v[marker] = 20.0
            v[sorted(allowed_tokens(label, num_classes))] = 20.0
            return v

        for c in range(num_classes):
            prior.class_emb.weight[c] = class_vector(c)
        prior.null_class_emb[0, 0] = class_vector(-1)
        D = width
        block.attn.qkv.bias[0] = 1.0  # every query is e_0 ...
        block.attn.qkv.weight[D, marker] = 50.0  # ... and only the class position's key has a large e_0 part
        block.attn.qkv.weight[2 * D : 2 * D + vocab, :vocab] = torch.eye(vocab)  # values: the token dims
        block.attn.proj.weight[:vocab, :vocab] = 30.0 * torch.eye(vocab)
    return prior


def test_forcing_prior_emits_only_its_class_tokens():
    prior = forcing_prior()
    labels = torch.tensor([0, 3, 9])
    tokens = generate(prior, 3, labels, cfg_scale=1.0, generator=torch.Generator().manual_seed(0))
    for row, label in zip(tokens.tolist(), labels.tolist()):
        assert set(row) == allowed_tokens(label)  # both tokens appear over 64 draws
    unconditional = generate(prior, 2, None, generator=torch.Generator().manual_seed(0))
    assert set(unconditional.flatten().tolist()) == allowed_tokens(-1)


def test_mixed_requests_come_back_in_order_with_their_own_class():
    vqvae, prior = tiny_vqvae(), forcing_prior()
    labels = [3, -1, 7, 0, -1, -1, 9, 3, 5, -1, 2]  # 7 conditional rows, 4 unconditional, interleaved
    seen: list[int] = []
    s = sample(prior, vqvae, labels, cfg_scale=3.0, seed=1, batch_size=2, progress=seen.append)
    assert s.indices.shape == (11, 8, 8) and s.images.shape == (11, 32, 32, 3) and s.latents.shape == (11, 8, 8, 8)
    for i, label in enumerate(labels):
        assert set(s.indices[i].ravel().tolist()) <= allowed_tokens(label), (i, label)
    # the image of each row is the decoding of that row's indices
    expected = unit_to_uint8(vqvae.decode_indices(torch.from_numpy(s.indices)))
    np.testing.assert_array_equal(s.images, expected)
    # progress counts token steps over every batch: 4 conditional + 2 unconditional batches of 64 steps
    assert seen[-1] == 6 * 64 and seen == sorted(seen)
    # guidance 0 is the unconditional model: every row draws from the null class's tokens
    uncond = sample(prior, vqvae, labels, cfg_scale=0.0, seed=1, batch_size=4)
    assert set(uncond.indices.ravel().tolist()) <= allowed_tokens(-1)


def test_sample_draws_from_the_nucleus_unless_told_otherwise():
    """``sample`` cuts every step to the default nucleus (what the CLI, the registered sampler and the evaluation
    use); top_p=1 draws from the whole distribution. A random prior spreads its mass over all 32 codes, so the
    cut changes the draws."""
    vqvae = tiny_vqvae()
    torch.manual_seed(0)
    config = PriorConfig(vocab_size=32, grid_h=8, grid_w=8, dim=16, heads=2, layers=1, dropout=0.0)
    prior = ConditionalPrior(config).eval()
    labels = [0, 1, 2, -1]
    default = sample(prior, vqvae, labels, seed=0).indices
    np.testing.assert_array_equal(default, sample(prior, vqvae, labels, seed=0, top_p=DEFAULT_TOP_P).indices)
    assert (default != sample(prior, vqvae, labels, seed=0, top_p=1.0).indices).any()
    assert 0 < DEFAULT_TOP_P < 1


def test_the_default_top_p_is_the_same_everywhere():
    """The light modules (CLI, registry) repeat the number rather than import torch: they must agree."""
    import inspect

    from cli import evaluate as cli_evaluate
    from cli import explore
    from tasks import registry
    from tasks.evaluate import evaluate_run
    from tasks.pyfunc.sampler_model import SamplerModel

    assert explore.TOP_P == cli_evaluate.TOP_P == registry.SAMPLER_TOP_P == DEFAULT_TOP_P
    assert {p.name: p.default for p in registry.sampler_signature().params}["top_p"] == DEFAULT_TOP_P
    for function in (SamplerModel.generate, evaluate_run):
        assert inspect.signature(function).parameters["top_p"].default == DEFAULT_TOP_P, function


def test_incompatible_models_and_bad_labels_are_refused():
    vqvae = tiny_vqvae()
    with pytest.raises(UserError, match=r"prior \(K=24, grid 8x8\) does not match the VQ-VAE \(K=32, grid 8x8\)"):
        sample(forcing_prior(vocab=24), vqvae, [1])
    with pytest.raises(UserError, match=r"prior \(K=32, grid 4x4\) does not match the VQ-VAE \(K=32, grid 8x8\)"):
        sample(forcing_prior(grid=4), vqvae, [1])
    with pytest.raises(UserError, match="class label 10 is outside 0-9"):
        sample(forcing_prior(), vqvae, [1, 10])
    with pytest.raises(UserError, match="class label -2 is outside 0-9"):
        sample(forcing_prior(), vqvae, [-2])


def test_tokens_from_the_tokenizer_decode_to_the_reconstruction():
    from model.train_vqvae import reconstruct_images, tokenize_images

    vqvae = tiny_vqvae(seed=3)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 32)[None, None, :, None]  # brighter to the right: not symmetric under h <-> w
    images = np.clip(rng.normal(0, 40, (4, 32, 32, 3)) + ramp, 0, 255).astype(np.uint8)
    tokens = tokenize_images(vqvae, images, batch_size=3)  # (N, T) row-major, as the prior is trained on
    grids = tokens.reshape(4, 8, 8)
    assert (grids != grids.transpose(0, 2, 1)).any()  # a transposed layout would show
    decoded = decode_tokens(vqvae, tokens, batch_size=3)
    np.testing.assert_array_equal(decoded.indices, grids)
    np.testing.assert_array_equal(decoded.images, reconstruct_images(vqvae, images))


def test_per_row_settings_follow_their_rows_across_batches():
    """cfg 0 samples the null class's tokens and cfg 1 the class's own (the forcing prior), so each row's
    tokens show which scale it got, through batches of 2 and unconditional rows in between."""
    vqvae, prior = tiny_vqvae(), forcing_prior()
    labels = [3, -1, 7, 0, 5, -1, 2]
    scales = [0.0, 9.0, 1.0, 1.0, 0.0, 0.0, 1.0]  # an unconditional row's scale is ignored
    s = sample(prior, vqvae, labels, cfg_scale=scales, temperature=[1.0, 2.0] * 3 + [0.5], seed=1, batch_size=2)
    for i, (label, scale) in enumerate(zip(labels, scales)):
        expected = allowed_tokens(-1 if scale == 0.0 else label)
        assert set(s.indices[i].ravel().tolist()) <= expected, (i, label, scale)
    with pytest.raises(UserError, match=r"^sampling: temperature must be one value or one per row \(7\), got 2$"):
        sample(prior, vqvae, labels, temperature=[1.0, 2.0])
