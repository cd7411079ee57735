"""VQ-VAE training loop: augmentation, falling loss, logging, checkpoints, exact resume, evaluation helpers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model.checkpoint import load_model
from model.errors import UserError
from model.train_vqvae import (
    evaluate_vqvae,
    reconstruct_images,
    train_vqvae,
)
from model.training import Hooks, augment_square, cosine_lr
from model.utils import uint8_to_unit, unit_to_uint8
from model.vqvae import VQVAE, VQVAEConfig

MODEL = VQVAEConfig(
    image_size=16,
    widths=(8, 16),
    embedding_dim=8,
    codebook_size=16,
    epochs=2,
    batch_size=8,
    lr=3e-3,
    seed=0,
    device="cpu",
    eval_batch_size=16,
)


def blobs(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """(N, S, S, 3) uint8 images of one soft coloured Gaussian blob each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx = rng.uniform(0.25, 0.75, (2, n, 1, 1))
    sigma = rng.uniform(0.08, 0.25, (n, 1, 1))
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))  # (N, S, S)
    colour = rng.uniform(0.3, 1.0, (n, 1, 1, 3))
    return (blob[..., None] * colour * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs(48, seed=1), blobs(16, seed=2)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------- augmentation


def dihedral(img: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a square (H, W, C) image."""
    rots = [torch.rot90(img, k, dims=(0, 1)) for k in range(4)]
    return rots + [r.flip(1) for r in rots]


def test_augment_keeps_shape_and_applies_a_square_symmetry():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (64, 6, 6, 3), dtype=torch.uint8)
    out = augment_square(batch, g)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    seen = set()
    for src, dst in zip(batch, out):
        matches = [k for k, t in enumerate(dihedral(src)) if torch.equal(t, dst)]
        assert matches, "output is not a flip/rotation of its input"
        assert torch.equal(torch.sort(src.flatten()).values, torch.sort(dst.flatten()).values)
        seen.add(matches[0])
    assert seen == set(range(8))  # every symmetry occurs in a batch of 64
    again = augment_square(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator alone decides


def test_augment_rejects_non_square():
    with pytest.raises(ValueError):
        augment_square(torch.zeros(2, 4, 6, 3, dtype=torch.uint8), torch.Generator())


# ---------------------------------------------------------------------------------------------- training


def test_training_reduces_loss_and_logs_every_epoch(data, tmp_path):
    train, val = data
    logged: list[tuple[dict, int]] = []
    steps: list[tuple[int, int]] = []
    cfg = replace(MODEL, epochs=6)
    result = train_vqvae(
        cfg,
        train,
        val,
        Hooks(log=lambda m, s: logged.append((m, s)), progress=lambda done, total: steps.append((done, total))),
    )
    assert [s for _, s in logged] == [1, 2, 3, 4, 5, 6]
    keys = {"train_loss", "train_recon", "train_vq", "val_mse", "val_psnr", "val_utilisation", "val_perplexity"}
    assert keys <= set(logged[0][0]) and all(isinstance(v, float) for v in logged[0][0].values())
    h = result.history
    assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"]
    assert h[-1]["val_mse"] < h[0]["val_mse"]
    assert 0 < h[-1]["val_utilisation"] <= 1 and 1 <= h[-1]["val_perplexity"] <= MODEL.codebook_size
    assert result.metrics == h[-1]
    assert steps[-1] == (6 * 6, 6 * 6) and len(steps) == 36  # 48 images / batch 8 = 6 steps per epoch
    assert not result.model.training


def test_cosine_lr_by_hand():
    assert cosine_lr(0, 10, 2.0, 0.0) == 2.0
    assert cosine_lr(5, 10, 2.0, 0.0) == pytest.approx(1.0)  # half way: the mean of lr and the floor
    assert cosine_lr(10, 10, 2.0, 0.1) == pytest.approx(0.2) and cosine_lr(99, 10, 2.0, 0.1) == pytest.approx(0.2)
    assert {cosine_lr(s, 10, 2.0, 1.0) for s in range(12)} == {2.0}  # min_ratio 1: constant
    assert cosine_lr(0, 10, 2.0, 0.0, warmup=4) == pytest.approx(0.5)  # warm-up: (step + 1) / warmup of lr
    assert cosine_lr(4, 10, 2.0, 0.0, warmup=4) == 2.0  # the decay starts after the warm-up


def test_lr_decays_toward_min_lr_ratio_over_training(data):
    train, val = data
    cfg = replace(MODEL, min_lr_ratio=0.1)
    total = 2 * 6  # 48 images / batch 8 = 6 steps per epoch
    history = train_vqvae(cfg, train, val).history
    assert [h["lr"] for h in history] == pytest.approx(
        [cosine_lr(5, total, 3e-3, 0.1), cosine_lr(11, total, 3e-3, 0.1)]
    )
    assert history[-1]["lr"] < 0.12 * 3e-3 < 3e-3 / 2 < history[0]["lr"]  # the last step is 1/12 before the floor
    assert [h["lr"] for h in train_vqvae(MODEL, train, val).history] == [3e-3, 3e-3]  # default 1: constant
    with pytest.raises(UserError, match="min_lr_ratio"):
        replace(MODEL, min_lr_ratio=1.5)


def test_resume_matches_an_uninterrupted_run_exactly(data, tmp_path):
    train, val = data
    straight = train_vqvae(MODEL, train, val)

    ckpt = tmp_path / "vqvae.pt"
    one = replace(MODEL, epochs=1)
    train_vqvae(one, train, val, Hooks(checkpoint_path=ckpt))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = train_vqvae(MODEL, train, val, Hooks(checkpoint_path=ckpt))

    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0]
    a, b = params(straight.model), params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.history[1]["train_loss"] == straight.history[1]["train_loss"]

    # a finished checkpoint resumes to "nothing left to do"; resume=False starts again from scratch
    again = train_vqvae(MODEL, train, val, Hooks(checkpoint_path=ckpt, log=lambda m, s: pytest.fail("trained")))
    assert len(again.history) == 2
    fresh = train_vqvae(one, train, val, Hooks(checkpoint_path=ckpt, resume=False))
    assert len(fresh.history) == 1 and torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_resume_refuses_a_different_model(data, tmp_path):
    train, val = data
    ckpt = tmp_path / "vqvae.pt"
    one = replace(MODEL, epochs=1)
    train_vqvae(one, train, val, Hooks(checkpoint_path=ckpt))
    other = VQVAEConfig(**{**MODEL.to_dict(), "codebook_size": 32})
    with pytest.raises(UserError, match="different architecture"):
        train_vqvae(other, train, val, Hooks(checkpoint_path=ckpt))


def test_on_epoch_end_can_stop_or_raise(data, tmp_path):
    train, val = data
    cfg = replace(MODEL, epochs=5)
    seen: list[int] = []
    result = train_vqvae(cfg, train, val, Hooks(on_epoch_end=lambda e, m: seen.append(e) or e == 2))
    assert seen == [1, 2] and len(result.history) == 2

    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned(epoch)

    ckpt = tmp_path / "vqvae.pt"
    with pytest.raises(Pruned):
        train_vqvae(cfg, train, val, Hooks(checkpoint_path=ckpt, on_epoch_end=prune))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1  # the checkpoint is written before the callback


def test_bad_images_are_user_errors(data):
    train, val = data
    with pytest.raises(UserError, match="expects 16x16x3"):
        train_vqvae(MODEL, blobs(8, size=32), val)
    with pytest.raises(UserError, match="uint8"):
        train_vqvae(MODEL, train.astype(np.float32), val)
    with pytest.raises(UserError, match="val_images"):
        train_vqvae(MODEL, train, val[:0])


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluate_and_reconstruct_agree_with_the_model_and_its_checkpoint(data, tmp_path):
    train, val = data
    ckpt = tmp_path / "vqvae.pt"
    result = train_vqvae(MODEL, train, val, Hooks(checkpoint_path=ckpt))
    model = result.model
    ev = evaluate_vqvae(model, val, batch_size=5)
    assert ev["indices"].shape == (16, MODEL.grid, MODEL.grid)
    x = uint8_to_unit(torch.from_numpy(val))
    mse = torch.mean((model.reconstruct(x) - x) ** 2).item()
    assert ev["mse"] == pytest.approx(mse, rel=1e-5)
    assert ev["mse"] == pytest.approx(result.metrics["val_mse"], rel=1e-5)
    assert np.array_equal(ev["indices"], model.tokenize(x).numpy())

    recon = reconstruct_images(model, val, batch_size=5)
    assert recon.dtype == np.uint8 and recon.shape == val.shape
    assert np.array_equal(recon, unit_to_uint8(model.reconstruct(x)))
    loaded, _ = load_model(ckpt, VQVAE)
    assert np.array_equal(reconstruct_images(loaded, val), recon)  # the stored model reproduces them exactly
