"""Survey nuisance augmentations for the judge: how surveys render the same galaxy differently.

A judge trained on one rendering (the synthetic set) must recognise morphology in another (Legacy Survey
cut-outs, JPEG copies of them): so during training each image gets its own random sky level, pixel noise,
white balance and saturation, stretch, PSF blur and JPEG compression, and none of them can be a class cue.

Each part is a pure function of the images and its drawn parameters (``sky_offset``, ``add_noise``,
``white_balance``, ``stretch``, ``gaussian_blur``, ``jpeg``), so it can be checked by hand; ``draw_nuisance``
draws every parameter per image from a CPU ``torch.Generator`` (reproducible on any device), and
``survey_nuisance`` draws and applies them in the order a survey does: PSF blur, colour response
(gains, saturation), stretch, sky level, pixel noise, then JPEG.

Images are (B, 3, H, W) float in the judge's [-1, 1] range (``model.utils.uint8_to_unit``: 1 unit = 127.5
grey levels); every part keeps shape, dtype and device, and the result is clamped to [-1, 1].

Dimension letters: B batch, C colour channels (3), H/W image size, K kernel taps.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class NuisanceConfig:
    """Ranges of the survey nuisances at strength 1 (offsets and sigmas in [-1, 1] units: 0.1 = 12.75 levels).

    ``strength`` (``JudgeConfig.nuisance``) multiplies the ranges of sky, sky_tint, noise, gain, saturation and
    gamma, and the JPEG fraction (capped at 1); the PSF blur has its own maximum sigma (``JudgeConfig.blur``).
    """

    sky: float = 0.12  # sky offset U(-a, a) added to all channels (0.12 = 15 levels: real minus synthetic ~ 14)
    sky_tint: float = 0.02  # extra sky offset U(-a, a) per channel (the sky's colour)
    noise: float = 0.05  # extra Gaussian pixel noise of sigma U(0, a) per image (0.05 = 6.4 levels)
    noise_correlated: float = 0.5  # fraction of images whose noise is smoothed by a 2x2 mean (sigma kept)
    gain: float = 0.1  # white balance: each channel's flux times exp(U(-a, a))
    saturation: float = 0.4  # colour saturation times exp(U(-a, a)): < 1 toward the grey level, > 1 away
    gamma: float = 0.3  # stretch: display value u in [0, 1] -> u ** exp(U(-a, a)) (surveys' asinh stretches differ)
    blur_fraction: float = 0.5  # fraction of images blurred by a Gaussian PSF of sigma U(0.3, blur) px
    jpeg_fraction: float = 0.5  # fraction of images JPEG-compressed
    jpeg_quality: tuple[int, int] = (50, 95)  # JPEG quality, a uniform integer in this range (inclusive)


@dataclass
class NuisanceDraw:
    """The parameters drawn for one batch (CPU tensors); a neutral value means the part leaves the image alone."""

    blur: torch.Tensor  # (B,) PSF sigma in px, 0: sharp
    gain: torch.Tensor  # (B, C) white-balance gain of each channel's flux, 1: unchanged
    saturation: torch.Tensor  # (B,) saturation factor, 1: unchanged
    gamma: torch.Tensor  # (B,) stretch exponent, 1: unchanged
    sky: torch.Tensor  # (B, C) sky offset in [-1, 1] units, 0: unchanged
    noise: torch.Tensor  # (B,) extra noise sigma in [-1, 1] units, 0: none
    correlated: torch.Tensor  # (B,) bool: noise smoothed by a 2x2 mean
    noise_seed: int  # seed of the noise field (drawn on the images' device)
    quality: torch.Tensor  # (B,) int JPEG quality, 0: not compressed


# ---------------------------------------------------------------------------------------------------
# the parts: pure functions of the images and their parameters


def sky_offset(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Add a constant per image and channel: offset (B, C) in [-1, 1] units (not clamped)."""
    return x + offset.to(x.device, x.dtype).view(*offset.shape, 1, 1)


def add_noise(x: torch.Tensor, sigma: torch.Tensor, correlated: torch.Tensor, seed: int) -> torch.Tensor:
    """Add Gaussian noise of std sigma (B,); where ``correlated`` (B,), the field is a 2x2 mean (times 2: same std).

    The noise field is drawn on ``x.device`` from a generator seeded with ``seed``, so it costs no transfer.
    """
    b, c, h, w = x.shape
    gen = torch.Generator(device=x.device).manual_seed(seed)
    field = torch.randn(b, c, h + 1, w + 1, generator=gen, device=x.device, dtype=x.dtype)  # (B, C, H+1, W+1)
    noise = field[:, :, :h, :w]  # (B, C, H, W)
    pick = torch.nonzero(correlated).flatten().to(x.device)
    if len(pick):
        noise = noise.clone()
        noise[pick] = 2.0 * F.avg_pool2d(field[pick], 2, stride=1)  # mean of 4 independent: std 1/2, times 2
    return x + sigma.to(x.device, x.dtype).view(b, 1, 1, 1) * noise


def white_balance(x: torch.Tensor, gain: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """Scale each channel's display value u = (x + 1) / 2 by gain (B, C), then move the colour away from
    (saturation > 1) or toward (< 1) the pixel's grey level, the channel mean: u -> grey + s (u - grey)."""
    u = (x + 1.0) * 0.5 * gain.to(x.device, x.dtype).view(*gain.shape, 1, 1)  # (B, C, H, W)
    grey = u.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    u = grey + saturation.to(x.device, x.dtype).view(-1, 1, 1, 1) * (u - grey)
    return u * 2.0 - 1.0


def stretch(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Change the display stretch: u = (x + 1) / 2 clamped to [0, 1] -> u ** gamma (B,) (< 1 lifts faint light)."""
    u = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
    return u.pow(gamma.to(x.device, x.dtype).view(-1, 1, 1, 1)) * 2.0 - 1.0


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> same, blurred by a separable Gaussian of std ``sigma`` px (one float, or (B,) per image;
    0 leaves an image as it is), reflect padding; only the images with sigma > 0 are convolved."""
    b = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(b)  # (B,)
    pick = torch.nonzero(sigma > 0).flatten()
    if len(pick) == b:
        return _blur(x, sigma)
    if len(pick) == 0:
        return x
    out = x.clone()
    out[pick.to(x.device)] = _blur(x[pick.to(x.device)], sigma[pick])
    return out


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """gaussian_blur for sigma (B,) > 0: one grouped convolution per axis, each image with its own kernel."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)  # (K,)
    k = torch.exp(-0.5 * (t / sigma.view(b, 1)) ** 2)  # (B, K)
    k = (k / k.sum(dim=1, keepdim=True)).to(x.device, x.dtype).repeat_interleave(c, dim=0)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)  # (1, B*C, H, W): each image's channels are groups of its own kernel
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-compress (Pillow, 4:2:0 chroma) the images whose quality (B,) is > 0; the others stay as they are."""
    picked = torch.nonzero(quality > 0).flatten().tolist()
    if not picked:
        return x
    rows = x[picked].detach().float().clamp(-1, 1).add(1.0).mul(127.5).round().to(torch.uint8)  # (n, C, H, W)
    rows = rows.permute(0, 2, 3, 1).cpu().numpy()  # (n, H, W, C)
    out = np.empty_like(rows)
    for j, i in enumerate(picked):
        buffer = io.BytesIO()
        Image.fromarray(rows[j]).save(buffer, format="JPEG", quality=int(quality[i]))
        out[j] = np.asarray(Image.open(buffer).convert("RGB"))
    y = torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype).div(127.5).sub(1.0)  # (n, C, H, W)
    x = x.clone()
    x[picked] = y
    return x


# ---------------------------------------------------------------------------------------------------
# drawing and applying


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def draw_nuisance(
    batch_size: int,
    generator: torch.Generator,
    strength: float = 1.0,
    blur: float = 0.0,
    config: NuisanceConfig = NuisanceConfig(),
    pixel_scale: int = 1,
) -> NuisanceDraw:
    """Draw every part's parameters for a batch (always the same number of draws, so the stream stays aligned).

    ``pixel_scale`` p: the images were average-pooled p x p from the resolution the ranges are set for, so a
    draw means the same on the sky as at full resolution: PSF sigmas are divided by p, and the noise sigma is
    the std that p x p pooling leaves of the full-resolution noise (white: 1 / p; the 2x2-correlated field:
    (2p - 1) / p**2), drawn white (after pooling, neighbours of the correlated field correlate by 1/6 at p = 2).
    JPEG, whose 8x8 blocks cover p x p times more sky, is left as it is.
    """
    b, s, cfg = batch_size, max(float(strength), 0.0), config
    blur_on = torch.rand(b, generator=generator) < (cfg.blur_fraction if blur > 0 else 0.0)
    blur_sigma = _uniform((b,), min(0.3, blur), blur, generator) * blur_on
    gain = torch.exp(_uniform((b, 3), -cfg.gain * s, cfg.gain * s, generator))
    saturation = torch.exp(_uniform((b,), -cfg.saturation * s, cfg.saturation * s, generator))
    gamma = torch.exp(_uniform((b,), -cfg.gamma * s, cfg.gamma * s, generator))
    sky = _uniform((b, 1), -cfg.sky * s, cfg.sky * s, generator) + _uniform(
        (b, 3), -cfg.sky_tint * s, cfg.sky_tint * s, generator
    )
    noise = _uniform((b,), 0.0, cfg.noise * s, generator)
    correlated = torch.rand(b, generator=generator) < cfg.noise_correlated
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    low, high = cfg.jpeg_quality
    quality = torch.randint(low, high + 1, (b,), generator=generator)
    quality = quality * (torch.rand(b, generator=generator) < min(cfg.jpeg_fraction * s, 1.0))
    if pixel_scale != 1:
        p = float(pixel_scale)
        blur_sigma = blur_sigma / p
        noise = noise * torch.where(correlated, (2 * p - 1) / p**2, 1 / p)
        correlated = torch.zeros_like(correlated)
    return NuisanceDraw(blur_sigma, gain, saturation, gamma, sky, noise, correlated, noise_seed, quality)


def apply_nuisance(x: torch.Tensor, draw: NuisanceDraw) -> torch.Tensor:
    """Apply a draw to (B, 3, H, W) images in [-1, 1]: blur, white balance, stretch, sky, noise, clamp, JPEG.

    A part whose parameters are all neutral is skipped, so a neutral draw returns ``x`` itself.
    """
    out = x
    if (draw.blur > 0).any():
        out = gaussian_blur(out, draw.blur)
    if (draw.gain != 1).any() or (draw.saturation != 1).any():
        out = white_balance(out, draw.gain, draw.saturation)
    if (draw.gamma != 1).any():
        out = stretch(out, draw.gamma)
    if (draw.sky != 0).any():
        out = sky_offset(out, draw.sky)
    if (draw.noise > 0).any():
        out = add_noise(out, draw.noise, draw.correlated, draw.noise_seed)
    if out is not x:
        out = out.clamp(-1.0, 1.0)
    if (draw.quality > 0).any():
        out = jpeg(out, draw.quality)
    return out


def survey_nuisance(
    x: torch.Tensor,
    generator: torch.Generator,
    strength: float = 1.0,
    blur: float = 0.0,
    config: NuisanceConfig = NuisanceConfig(),
    pixel_scale: int = 1,
) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> same, each image under its own survey nuisances (``config`` ranges times
    ``strength``; PSF sigma up to ``blur`` px on a ``config.blur_fraction`` of the images; ``pixel_scale``:
    x was pooled that many times from the resolution ``blur`` is in px of, see ``draw_nuisance``). Strength 0
    and blur 0: ``x`` itself, and nothing is drawn from ``generator``."""
    if strength <= 0 and blur <= 0:
        return x
    return apply_nuisance(x, draw_nuisance(x.shape[0], generator, strength, blur, config, pixel_scale))
