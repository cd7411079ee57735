"""The CUDA path (runs only where a GPU is present): bf16 training steps, tokenizing, guided generation, decoding.

Tiny models, a few seconds on any GPU; the CPU suite covers the numbers, this covers devices and dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MODEL = dict(image_size=32, widths=(8, 16), embedding_dim=8, codebook_size=32)  # grid 8x8, K = 32


def test_vqvae_and_prior_train_tokenize_and_generate_on_cuda():
    from model.prior import ConditionalPrior, prior_preset
    from model.sampling import sample
    from model.train_prior import train_prior
    from model.train_vqvae import reconstruct_images, train_vqvae
    from model.vqvae import preset
    from tasks.prior import tokenize_images

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(80) % 10

    model_cfg, train_cfg = preset("demo", **MODEL, epochs=1, batch_size=16, device="cuda", bf16=True)
    vq = train_vqvae(model_cfg, train_cfg, images[:64], images[64:])
    vqvae = vq.model
    assert next(vqvae.parameters()).device.type == "cuda" and next(vqvae.parameters()).dtype == torch.float32
    assert math.isfinite(vq.metrics["train_loss"]) and math.isfinite(vq.metrics["val_mse"])

    tokens = tokenize_images(vqvae, images, batch_size=32)  # (N, T) on the host
    assert tokens.shape == (80, 64) and tokens.dtype == np.uint16 and int(tokens.max()) < 32
    recon = reconstruct_images(vqvae, images[:4])
    assert recon.shape == (4, 32, 32, 3) and recon.dtype == np.uint8

    tiny_prior = dict(dim=16, heads=2, layers=1, epochs=1, batch_size=16)
    config, prior_cfg = prior_preset("demo", 32, 8, 8, **tiny_prior, device="cuda", bf16=True)
    pr = train_prior(config, prior_cfg, tokens[:64], labels[:64], tokens[64:], labels[64:])
    prior: ConditionalPrior = pr.model
    assert next(prior.parameters()).device.type == "cuda"
    assert math.isfinite(pr.final["train_loss"]) and math.isfinite(pr.final["val_bits_per_token"])

    x = torch.as_tensor(tokens[:4].astype(np.int64), device="cuda")
    y = torch.as_tensor(labels[:4], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = prior(x, y)
    assert logits.shape == (4, 64, 32) and logits.dtype == torch.bfloat16

    generator = torch.Generator(device="cuda").manual_seed(0)
    out = prior.generate(3, torch.tensor([0, 5, 9], device="cuda"), cfg_scale=3.0, top_k=8, generator=generator)
    assert out.shape == (3, 64) and out.dtype == torch.long and out.device.type == "cuda" and int(out.max()) < 32

    s = sample(prior, vqvae, [0, -1, 5], cfg_scale=3.0, seed=0)
    assert s.images.shape == (3, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.latents.shape == (3, 8, 8, 8) and s.latents.dtype == np.float32 and s.indices.shape == (3, 8, 8)
    again = sample(prior, vqvae, [0, -1, 5], cfg_scale=3.0, seed=0)
    np.testing.assert_array_equal(again.indices, s.indices)  # seeded on the GPU too
