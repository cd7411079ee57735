"""Survey nuisance augmentations: each part on hand-checkable images, the draws, determinism, the identity path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.nuisance import (
    NuisanceConfig,
    NuisanceDraw,
    add_noise,
    apply_nuisance,
    draw_nuisance,
    gaussian_blur,
    jpeg,
    sky_offset,
    stretch,
    survey_nuisance,
    white_balance,
)


def neutral(b: int, **parts) -> NuisanceDraw:
    """A draw that changes nothing, with ``parts`` replaced."""
    base = NuisanceDraw(
        blur=torch.zeros(b),
        gain=torch.ones(b, 3),
        saturation=torch.ones(b),
        gamma=torch.ones(b),
        sky=torch.zeros(b, 3),
        noise=torch.zeros(b),
        correlated=torch.zeros(b, dtype=torch.bool),
        noise_seed=0,
        quality=torch.zeros(b, dtype=torch.long),
    )
    return dataclasses.replace(base, **parts)


def galaxies(b: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(b, 3, size, size) in [-1, 1]: a coloured Gaussian blob on a sky at -0.6 (no pixel near the clamp)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    blob = torch.exp(-(yy**2 + xx**2) / (2 * (size / 8) ** 2))  # (H, W)
    colour = 0.3 + 0.5 * torch.rand(b, 3, 1, 1, generator=g)  # (B, C, 1, 1)
    return -0.6 + colour * blob + 0.01 * torch.randn(b, 3, size, size, generator=g)


def border(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, n) the pixels of a 3 px frame."""
    mask = torch.ones(x.shape[-2:], dtype=torch.bool)
    mask[3:-3, 3:-3] = False
    return x[:, :, mask]


def test_sky_offset_shifts_the_border_median_by_the_drawn_amount():
    x = galaxies()
    draw = draw_nuisance(4, torch.Generator().manual_seed(1), strength=1.0)
    assert draw.sky.abs().max() <= 0.12 + 0.02 and draw.sky.abs().max() > 0.01
    out = apply_nuisance(x, neutral(4, sky=draw.sky))
    shift = border(out).median(dim=2).values - border(x).median(dim=2).values  # (B, C)
    torch.testing.assert_close(shift, draw.sky, atol=1e-5, rtol=0)
    torch.testing.assert_close(sky_offset(x, draw.sky) - x, draw.sky.view(4, 3, 1, 1).expand_as(x))


def test_noise_raises_the_std_of_a_flat_image_to_the_drawn_sigma():
    flat = torch.zeros(4, 3, 128, 128)
    sigma = torch.tensor([0.0, 0.02, 0.05, 0.05])
    correlated = torch.tensor([False, False, False, True])
    out = add_noise(flat, sigma, correlated, seed=3)
    std = out.flatten(1).std(dim=1)
    torch.testing.assert_close(std, sigma, atol=0.0, rtol=0.02)
    # the 2x2 mean makes horizontal neighbours share 2 of 4 draws: correlation 1/2, against 0 without it
    right = [np.corrcoef(out[i, :, :, :-1].flatten(), out[i, :, :, 1:].flatten())[0, 1] for i in (2, 3)]
    assert abs(right[0]) < 0.03 and right[1] == pytest.approx(0.5, abs=0.03)
    assert torch.equal(out, add_noise(flat, sigma, correlated, seed=3))


def test_blur_lowers_high_frequency_power_and_keeps_flux():
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = gaussian_blur(x, torch.tensor([0.0, 1.5]))
    assert torch.equal(out[0], x[0])  # sigma 0: untouched

    def high_power(img: torch.Tensor) -> float:  # power at spatial frequencies above 1/4 cycle per pixel
        f = torch.fft.fftfreq(64)
        high = (f.abs().view(-1, 1) > 0.25) | (f.abs().view(1, -1) > 0.25)
        return float((torch.fft.fft2(img).abs() ** 2)[:, high].sum())

    # a Gaussian of sigma 1.5 passes exp(-2 pi^2 1.5^2 0.25^2) = 0.062 of the power at 1/4 cycle, less above
    assert high_power(out[1]) < 0.06 * high_power(x[1])
    flat = torch.full((2, 3, 16, 16), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 0.2
    # the blurred spike's second moment is the kernel's variance (sigma^2 = 1 per axis)
    _, xx = torch.meshgrid(torch.arange(21.0) - 10, torch.arange(21.0) - 10, indexing="ij")
    assert (blurred[0, 0] * xx**2).sum().item() == pytest.approx(1.0, rel=0.02)


def test_gains_scale_channels_and_saturation_moves_colour_about_the_grey_level():
    x = galaxies(2)
    u = (x + 1) / 2  # display values
    gain = torch.tensor([[1.1, 1.0, 0.9], [0.95, 1.05, 1.0]])
    out = white_balance(x, gain, torch.ones(2))
    torch.testing.assert_close((out + 1) / 2, u * gain.view(2, 3, 1, 1))
    grey = u.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    greyed = (white_balance(x, torch.ones(2, 3), torch.zeros(2)) + 1) / 2
    torch.testing.assert_close(greyed, grey.expand_as(u))
    vivid = (white_balance(x, torch.ones(2, 3), torch.full((2,), 2.0)) + 1) / 2
    torch.testing.assert_close(vivid, grey + 2 * (u - grey))


def test_stretch_is_a_gamma_on_display_values():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 1, 4).expand(2, 3, 1, 4)
    out = stretch(x, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(out[0], x[0])
    # u = 0, 0.25, 0.5, 1 -> sqrt: 0, 0.5, 0.7071, 1 -> x = -1, 0, 0.4142, 1
    torch.testing.assert_close(out[1, 0, 0], torch.tensor([-1.0, 0.0, 2 * 0.5**0.5 - 1, 1.0]))


def test_jpeg_changes_images_a_little_more_at_lower_quality_and_leaves_the_rest():
    x = galaxies(3, size=64)
    out = jpeg(x, torch.tensor([95, 50, 0]))
    error = (out - x).abs().flatten(1).mean(1)  # (B,) mean absolute error, [-1, 1] units
    assert 0 < error[0] < error[1] < 0.02  # 0.02 = 1.3 grey levels
    assert torch.equal(out[2], x[2])
    assert out.dtype == x.dtype and torch.equal(out, jpeg(x, torch.tensor([95, 50, 0])))


def test_draws_fill_their_documented_ranges_and_scale_with_strength():
    cfg = NuisanceConfig()
    d = draw_nuisance(4000, torch.Generator().manual_seed(0), strength=1.0, blur=1.5)
    assert ((d.blur == 0) | ((d.blur >= 0.3) & (d.blur <= 1.5))).all()
    assert (d.blur > 0).float().mean() == pytest.approx(cfg.blur_fraction, abs=0.03)
    assert d.gain.log().abs().max() <= cfg.gain and d.gain.log().abs().max() > 0.95 * cfg.gain
    assert d.gamma.log().abs().max() <= cfg.gamma and d.gamma.log().abs().max() > 0.95 * cfg.gamma
    assert d.saturation.log().abs().max() <= cfg.saturation and d.saturation.log().abs().max() > 0.95 * cfg.saturation
    assert d.noise.max() <= cfg.noise and d.noise.max() > 0.95 * cfg.noise and d.noise.min() >= 0
    picked = d.quality[d.quality > 0]
    assert len(picked) / 4000 == pytest.approx(cfg.jpeg_fraction, abs=0.03)
    assert picked.min() == cfg.jpeg_quality[0] and picked.max() == cfg.jpeg_quality[1]
    half = draw_nuisance(4000, torch.Generator().manual_seed(0), strength=0.5, blur=1.5)
    assert half.gamma.log().abs().max() <= cfg.gamma / 2 and half.gain.log().abs().max() <= cfg.gain / 2
    assert half.sky.abs().max() <= (cfg.sky + cfg.sky_tint) / 2 and half.noise.max() <= cfg.noise / 2
    assert (half.quality > 0).float().mean() == pytest.approx(cfg.jpeg_fraction / 2, abs=0.03)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_survey_nuisance_is_seeded_and_keeps_shape_dtype_and_range(dtype):
    x = galaxies(16, size=32).to(dtype)
    a = survey_nuisance(x, torch.Generator().manual_seed(5), strength=1.0, blur=1.5)
    b = survey_nuisance(x, torch.Generator().manual_seed(5), strength=1.0, blur=1.5)
    c = survey_nuisance(x, torch.Generator().manual_seed(6), strength=1.0, blur=1.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == dtype and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, x) and (a - x).abs().mean() < 0.2  # changed, but the galaxy is still there
    big = survey_nuisance(x * 3, torch.Generator().manual_seed(5), strength=1.5, blur=1.5)  # some not JPEG-ed
    assert big.min() >= -1 and big.max() <= 1


def test_strength_zero_without_blur_is_the_identity_and_draws_nothing():
    x = galaxies()
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert survey_nuisance(x, g, strength=0.0, blur=0.0) is x
    assert torch.equal(g.get_state(), state)
    assert apply_nuisance(x, neutral(4)) is x
    # strength 0 with blur: only the PSF, on about half of the images (the old judge's blur_half)
    x = galaxies(64, size=16)
    out = survey_nuisance(x, torch.Generator().manual_seed(0), strength=0.0, blur=1.5)
    sigma = draw_nuisance(64, torch.Generator().manual_seed(0), strength=0.0, blur=1.5).blur
    assert 20 < int((sigma > 0).sum()) < 44
    torch.testing.assert_close(out, gaussian_blur(x, sigma).clamp(-1, 1), atol=0, rtol=0)


def test_nuisances_at_a_pooled_resolution_mean_what_they_mean_at_full_resolution():
    # blur then pool 2x2 = pool then blur with half the sigma; pooling white noise halves its std, pooling the
    # 2x2-correlated field leaves 3/4 of it: pixel_scale=2 draws the noise the pooled images would carry
    pool = torch.nn.AvgPool2d(2)
    t = torch.arange(64, dtype=torch.float32) - 31.5
    blob = torch.exp(-(t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) / (2 * 4.0**2))  # (64, 64) Gaussian, sigma 4 px
    x = (blob * 1.6 - 0.8).expand(4, 3, 64, 64)  # (B, C, H, W)
    only_blur = NuisanceConfig(blur_fraction=1.0)
    full = pool(survey_nuisance(x, torch.Generator().manual_seed(1), 0.0, 3.0, only_blur))
    half = survey_nuisance(pool(x), torch.Generator().manual_seed(1), 0.0, 3.0, only_blur, pixel_scale=2)
    assert (full - half).abs().max() < 0.01  # unscaled (sigma 3 px at 32 px): off by ~0.5
    only_noise = NuisanceConfig(sky=0, sky_tint=0, gain=0, saturation=0, gamma=0, jpeg_fraction=0, noise=0.3)
    grey = torch.zeros(16, 3, 64, 64)
    full = pool(survey_nuisance(grey, torch.Generator().manual_seed(2), 1.0, 0.0, only_noise))
    half = survey_nuisance(pool(grey), torch.Generator().manual_seed(2), 1.0, 0.0, only_noise, pixel_scale=2)
    ratio = half.std(dim=(1, 2, 3)) / full.std(dim=(1, 2, 3))  # (B,) per image
    assert ratio.sub(1).abs().max() < 0.1, ratio
