"""VQ-VAE model: shapes, quantizers, eval-mode tokenizing, indices -> latents, checkpoints, presets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import load_model, save_checkpoint
from model.config import from_preset
from model.errors import UserError
from model.utils import evaluating
from model.vqvae import PRESETS, VQVAE, SimpleQuantizer, VQVAEConfig, lucidrains_defaults

TINY = dict(image_size=16, widths=(8, 16), embedding_dim=12, codebook_size=32)

QUANTIZER_OPTIONS = [
    dict(),
    dict(codebook_dim=4),
    dict(use_cosine_sim=True),
    dict(use_cosine_sim=True, codebook_dim=4),
    dict(rotation_trick=True),
    dict(kmeans_init=True, threshold_ema_dead_code=2, decay=0.9),
    dict(quantizer="simple", commitment_weight=0.5),
]


def images(b: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1  # (B, C, H, W) in [-1, 1]


def trained_step(model: VQVAE, x: torch.Tensor) -> None:
    """One train-mode forward/backward so the EMA codebook and BN statistics are not at their init values."""
    model.train()
    out = model(x)
    (F.mse_loss(out.x_recon, x) + out.vq_loss).backward()


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- config


def test_config_derived_sizes_and_round_trip():
    cfg = VQVAEConfig()
    assert (cfg.downsample, cfg.grid, cfg.seq_len) == (8, 16, 256)
    cfg = VQVAEConfig(image_size=64, widths=(8, 16, 32, 64), codebook_dim=8)
    assert (cfg.downsample, cfg.grid, cfg.seq_len) == (16, 4, 16)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain values only
    assert VQVAEConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    "kw",
    [
        dict(image_size=100),  # not divisible by 8
        dict(quantizer="nope"),
        dict(widths=()),
        dict(codebook_size=1),
        dict(decay=1.0),
        dict(quantizer="simple", kmeans_init=True),
        dict(quantizer="simple", codebook_dim=8),
    ],
)
def test_config_rejects_bad_values(kw):
    with pytest.raises(UserError, match="VQVAEConfig"):
        VQVAEConfig(**kw)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(UserError, match="bogus"):
        VQVAEConfig.from_dict({**VQVAEConfig().to_dict(), "bogus": 1})


def test_presets_and_overrides():
    assert set(PRESETS) >= {"article", "demo"}
    mc = from_preset(PRESETS, "article")
    assert (mc.image_size, mc.widths, mc.embedding_dim, mc.codebook_size) == (128, (32, 64, 128), 256, 1024)
    assert (mc.epochs, mc.batch_size, mc.lr) == (500, 64, 3e-4)
    # issue 12: the demo keeps a 16x16 grid (an 8x8 one lost the arms) and takes the tuned anti-collapse setting
    demo = from_preset(PRESETS, "demo")
    assert (demo.grid, demo.embedding_dim, demo.codebook_size) == (16, 32, 256)
    assert (demo.kmeans_init, demo.threshold_ema_dead_code, demo.decay, demo.codebook_dim) == (True, 8, 0.9, 8)
    mc = from_preset(PRESETS, "demo", image_size=32, epochs=1, seed=3)
    assert (mc.image_size, mc.epochs, mc.seed) == (32, 1, 3)
    assert mc.grid == 32 // mc.downsample
    with pytest.raises(UserError):
        from_preset(PRESETS, "demo", not_a_field=1)
    with pytest.raises(UserError):
        from_preset(PRESETS, "huge")
    with pytest.raises(UserError, match="only apply to quantizer='lucidrains'"):  # demo sets kmeans_init
        from_preset(PRESETS, "demo", quantizer="simple")
    simple = from_preset(PRESETS, "demo", quantizer="simple", **lucidrains_defaults())
    assert simple.quantizer == "simple" and not simple.kmeans_init


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("quantizer", ["lucidrains", "simple"])
def test_preset_shapes_at_32px(name, quantizer):
    extra = lucidrains_defaults() if quantizer == "simple" else {}
    mc = from_preset(PRESETS, name, image_size=32, quantizer=quantizer, **extra)
    model = VQVAE(mc)
    x = images(2, 32)
    out = model(x)
    D, h = mc.embedding_dim, mc.grid
    assert out.x_recon.shape == x.shape
    assert out.z_q.shape == (2, D, h, h)
    assert out.indices.shape == (2, h, h) and out.indices.dtype == torch.long
    assert out.vq_loss.shape == ()
    assert out.x_recon.abs().max() <= 1.0  # Tanh output
    assert model.encode(x).shape == (2, D, h, h)
    assert model.codebook.shape == (mc.codebook_size, D)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())


def test_article_architecture_maps_128_to_16x16():
    model = VQVAE(VQVAEConfig())
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    with torch.no_grad():
        z = model.eval().encode(torch.zeros(1, 3, 128, 128))
    assert z.shape == (1, 256, 16, 16)


# ---------------------------------------------------------------------------------------------- quantizers


@pytest.mark.parametrize("kw", QUANTIZER_OPTIONS, ids=lambda kw: ",".join(kw) or "default")
def test_indices_to_latents_reproduces_eval_forward(kw):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**{**TINY, **kw}))
    x = images()
    trained_step(model, x)
    model.eval()
    with torch.no_grad():
        out = model(x)
    z_q = model.indices_to_latents(out.indices)
    assert torch.equal(z_q, out.z_q)
    assert torch.equal(model.decode_indices(out.indices), out.x_recon)
    assert torch.equal(model.tokenize(x), out.indices)
    assert torch.equal(model.reconstruct(x), out.x_recon)
    # the codebook property lists the same vectors the lookup uses
    every = torch.arange(model.config.codebook_size).view(1, 1, -1)  # (1, 1, K) as a (B, h, w) grid
    table = model.indices_to_latents(every)[0, :, 0].T  # (K, D)
    torch.testing.assert_close(model.codebook, table.detach())


@pytest.mark.parametrize(
    "kw", [dict(), dict(codebook_dim=4), dict(quantizer="simple")], ids=["lucidrains", "projected", "simple"]
)
def test_indices_to_latents_looks_up_each_position_of_a_non_square_grid(kw):
    """z_q[b, :, i, j] is the codebook row of indices[b, i, j]; h != w catches a transposed layout."""
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**{**TINY, **kw})).eval()
    trained_step(model, images())
    indices = torch.randint(0, 32, (2, 3, 5), generator=torch.Generator().manual_seed(1))  # (B, h, w)
    with torch.no_grad():
        z_q = model.indices_to_latents(indices.int())  # any integer dtype
        table = model.codebook  # (K, D)
    assert z_q.shape == (2, 12, 3, 5)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                torch.testing.assert_close(z_q[b, :, i, j], table[indices[b, i, j]])


def test_cosine_codebook_is_unit_norm_before_projection():
    model = VQVAE(VQVAEConfig(**TINY, use_cosine_sim=True))
    trained_step(model, images())
    norms = model.quantizer.vq.codebook.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kw", QUANTIZER_OPTIONS[:-1], ids=lambda kw: ",".join(kw) or "default")
def test_tokenize_and_reconstruct_never_touch_the_codebook(kw):
    model = VQVAE(VQVAEConfig(**{**TINY, **kw}))
    x = images()
    trained_step(model, x)  # k-means init happens here
    model.train()
    model.decoder[1].eval()  # a submodule in a different mode must get its own mode back
    before = state_copy(model)
    model.tokenize(x)
    model.reconstruct(x)
    model.decode_indices(torch.zeros(2, 8, 8, dtype=torch.long))
    with evaluating(model), torch.no_grad():
        model(x)
    assert states_equal(before, state_copy(model))  # EMA codebook and BN running stats unchanged
    assert model.training and model.encoder.training and not model.decoder[1].training


def test_train_mode_forward_updates_the_codebook_even_without_grad():
    """The trap the eval-mode helpers exist for: lucidrains' EMA update runs on any train-mode forward."""
    model = VQVAE(VQVAEConfig(**TINY))
    before = model.quantizer.vq.codebook.clone()
    model.train()
    with torch.no_grad():
        model(images())
    assert not torch.equal(before, model.quantizer.vq.codebook)


def test_simple_quantizer_losses_and_straight_through():
    cfg = VQVAEConfig(image_size=16, widths=(8, 16), embedding_dim=6, codebook_size=10, quantizer="simple")
    q = SimpleQuantizer(cfg)
    w = q.embedding.weight
    assert w.abs().max() <= 1.0 / 10
    z = torch.randn(3, 5, 6, requires_grad=True)
    z_q, indices, loss = q(z)
    assert z_q.shape == (3, 5, 6) and indices.shape == (3, 5)
    nearest = torch.cdist(z.detach().reshape(-1, 6), w.detach()).argmin(dim=1).view(3, 5)
    assert torch.equal(indices, nearest)
    mse = F.mse_loss(w[indices], z).item()
    assert loss.item() == pytest.approx((1 + cfg.commitment_weight) * mse, rel=1e-5)
    torch.testing.assert_close(z_q, w[indices])  # values of the codes ...
    (z_q * torch.arange(6.0)).sum().backward()  # ... gradient of the input (straight-through)
    torch.testing.assert_close(z.grad, torch.arange(6.0).expand(3, 5, 6))
    assert w.grad is None  # the codebook learns only through the loss


def test_simple_quantizer_codebook_learns_from_loss():
    cfg = VQVAEConfig(image_size=16, widths=(8, 16), embedding_dim=6, codebook_size=10, quantizer="simple")
    q = SimpleQuantizer(cfg)
    _, indices, loss = q(torch.randn(2, 4, 6))
    loss.backward()
    used = torch.zeros(10, dtype=torch.bool)
    used[indices.unique()] = True
    grad_norm = q.embedding.weight.grad.norm(dim=1)
    assert (grad_norm[used] > 0).all() and (grad_norm[~used] == 0).all()


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kw", [dict(kmeans_init=True, codebook_dim=4), dict(quantizer="simple")])
def test_checkpoint_round_trip(tmp_path, kw):
    model = VQVAE(VQVAEConfig(**{**TINY, **kw}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = images()
    trained_step(model, x)
    opt.step()
    path = tmp_path / "sub" / "vqvae.pt"
    save_checkpoint(path, model, optimizer=opt, epoch=3, note="hi")
    assert [p.name for p in path.parent.iterdir()] == ["vqvae.pt"]  # no temp file left behind

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 3 and raw["note"] == "hi" and raw["kind"] == "vqvae"
    assert json.loads(json.dumps(raw["config"])) == model.config.to_dict()
    assert isinstance(raw["rng"]["torch"], torch.Tensor)

    loaded, ckpt = load_model(path, VQVAE)
    assert not loaded.training and ckpt["epoch"] == 3
    assert states_equal(state_copy(model), state_copy(loaded))
    model.eval()
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))

    raw["model"]["encoder.0.extra"] = torch.zeros(1)  # strict load refuses foreign keys
    torch.save(raw, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_model(path, VQVAE)


def test_load_model_reports_bad_files(tmp_path):
    from model.prior import ConditionalPrior

    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing.pt", VQVAE)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(bad, VQVAE)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(UserError, match="not a vqvae checkpoint"):
        load_model(other, VQVAE)
    vqvae_file = tmp_path / "vqvae.pt"
    save_checkpoint(vqvae_file, VQVAE(VQVAEConfig(**TINY)))
    with pytest.raises(UserError, match="is a vqvae checkpoint, not a prior one"):
        load_model(vqvae_file, ConditionalPrior)
