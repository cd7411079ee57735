"""Synthetic Galaxy10-format galaxies rendered with GalSim (SPEC D2), the offline stand-in for Galaxy10 DECaLS.

Each image is a 67 arcsec DECaLS-like cut-out (256 px at 0.262 arcsec/px; other sizes keep the field and
change the pixel scale): a galaxy of the requested class drawn in the g, r and z bands from Sersic,
exponential and inclined-disk profiles, spiral arms and star-forming knots, tidal tails and dust lanes,
a few resolved background galaxies and a crowd of faint red and blue field sources, convolved with a Moffat
or Kolmogorov PSF, plus coloured foreground stars and correlated sky noise (partly shared by the bands),
combined into RGB with the Legacy Survey viewer's asinh stretch and offset (z -> red, r -> green, g -> blue;
an empty sky renders at about 33 of 255) and JPEG-compressed as Galaxy10's cut-outs were. A small fraction
of images is drawn as a class that volunteers confuse with its label (``model.synth_labels``). Fluxes are in
nanomaggies. Everything an image needs comes from its own numpy Generator, so a file is the same whatever
the number of worker processes.

Calibrated (SYNTH_VERSION 2) against real Galaxy10 DECaLS images with `galaxy data realism`: sky level and
noise, the density of field sources, and per-class colour, size and axis ratio; colours follow published
colour-morphology relations and overlap between classes as real ones do. Since version 3 each galaxy has a
redshift z (``model.synth_redshift``) drawn first, from Galaxy10's distribution, and a physical half-light
radius R: it appears at θ = R / D_A(z) with flux L / (4π D_L(z)²), so (1 + z)^-4 fainter per unit area, and
redder by a per-pixel K-correction; v2's sizes, magnitudes and colours hold at z = 0.07. A fraction
(REDSHIFT_MISSING) of the stored redshifts is NaN, as in the real file.

Dimension letters: N images, S image side (pixels), K bands (3: g, r, z), C colour channels (3: R, G, B),
P points (knots, stream particles).
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from pathlib import Path

import galsim
import h5py
import numpy as np
from PIL import Image

from model.errors import UserError
from model.galaxy10 import IMAGE_KEY, LABEL_KEY, NUM_CLASSES
from model.synth_galaxies import (
    GSP,
    PIXEL_SCALE,
    PX,
    REFERENCE_SIZE,
    Scene,
    disk_colour,
    draw_cigar,
    draw_edge_on,
    draw_smooth,
    draw_spiral,
    projection,
    red_colour,
    sed,
    sersic,
    transform,
)
from model.synth_interacting import draw_disturbed, draw_merging
from model.synth_labels import image_rng, place_and_draw, synth_labels
from model.synth_redshift import (
    REDSHIFT_MISSING,
    Z_REF,
    apparent_radius,
    checked_redshift,
    distance_dimming,
    draw_radius,
    draw_redshift,
    k_correct,
)

#: Bump when the look of the images changes (stored in the file's attrs).
SYNTH_VERSION = 3
GENERATOR = "galaxy-synth"
RGB_SCALES = np.array([2.2, 3.4, 6.0])  # (C,) multipliers for z, r, g as R, G, B (Legacy Survey viewer)
RGB_Q = 20.0
RGB_M = 0.03  # the viewer's offset: an empty sky renders at about 33 of 255, as in Galaxy10
NOISE_SCALE = 0.6
NOISE_COMMON = 0.5  # fraction of the sky-noise variance shared by the bands
SKY_SIGMA = np.array([0.00276, 0.0047, 0.01]) * NOISE_SCALE  # (K,) sky noise per reference pixel, nanomaggies
JPEG_QUALITY = (75, 95)  # each image is JPEG-compressed at a quality drawn from this range, as Galaxy10's were
#: Per-image residual sky per R, G, B (mean, sd) in rendered levels, on top of RGB_M's 33.
SKY_RESIDUAL_ADU = (np.array([0.3, -0.7, -0.7]), np.array([1.3, 0.4, 0.4]))
#: d(level) / d(stretch input) at the sky: 255 asinh(Q m) / (sqrt(Q) m) for m = RGB_M.
ADU_PER_UNIT = 255 * math.asinh(RGB_Q * RGB_M) / (math.sqrt(RGB_Q) * RGB_M)
MEAN_EBV = 0.03  # mag: mean Galactic E(B-V) at the survey's high latitudes (exponentially distributed)
EXTINCTION = np.array([3.21, 2.17, 1.21])  # (K,) A_band / E(B-V) for DECam g, r, z (Schlafly & Finkbeiner 2011)
#: mag per class: disks have lower surface brightness than ellipticals of the same size; edge-on disks pile
#: their light along a line, so they are dimmed more to keep their centres as bright as real ones.
DISK_DIMMING = (0.0, 0.0, 0.0, 0.0, 0.3, 1.1, 1.1, 1.0, 1.2, 1.0)
FAINT_SOURCES = (15.0, 45.0)  # mean count of faint field sources per 67-arcsec cut-out (drawn per image)


# ---------------------------------------------------------------- PSF, stars, noise, colour


def _psf(rng: np.random.Generator) -> galsim.GSObject:
    """A DECaLS-like PSF: Moffat (beta 2.5-4) or Kolmogorov, FWHM 1.0-1.6 arcsec, slightly elliptical."""
    fwhm = rng.uniform(1.0, 1.6)
    if rng.random() < 0.75:
        psf = galsim.Moffat(beta=rng.uniform(2.5, 4.0), fwhm=fwhm, gsparams=GSP)
    else:
        psf = galsim.Kolmogorov(fwhm=fwhm, gsparams=GSP)
    return psf.shear(g=rng.uniform(0, 0.05), beta=rng.uniform(0, math.pi) * galsim.radians)


def _psf_stamp(psf: galsim.GSObject, scale: float) -> np.ndarray:
    """(s, s) odd-sized pixelated PSF image with unit sum, about 13 arcsec across.

    Drawn in real space on a grid k times finer than the pixels (k = 1 at 256 px) and summed k x k,
    which integrates over the pixel far faster than GalSim's FFT of a wide-winged Moffat."""
    s = 2 * int(math.ceil(6.5 / scale)) + 1
    k = max(1, math.ceil(scale / PIXEL_SCALE - 1e-6))
    fine = psf.drawImage(nx=s * k, ny=s * k, scale=scale / k, method="no_pixel").array.astype(np.float64)
    img = fine.reshape(s, k, s, k).sum(axis=(1, 3))  # (s, s)
    return img / img.sum()


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (a quick FFT size)."""
    best = 2 ** math.ceil(math.log2(n))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _convolve(bands: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """Convolve (K, S, S) band images with an odd (s, s) PSF stamp (FFT, zero-padded, no wrap-around)."""
    _, n, _ = bands.shape
    s = stamp.shape[0]
    r = s // 2
    m = _fast_len(n + r)  # padded FFT size: the kernel's reach wraps into the padding only
    kernel = np.zeros((m, m), dtype=np.float32)
    kernel[:s, :s] = stamp
    kernel = np.roll(kernel, (-r, -r), axis=(0, 1))  # stamp centre at (0, 0)
    out = np.fft.irfft2(np.fft.rfft2(bands, s=(m, m)) * np.fft.rfft2(kernel)[None], s=(m, m))
    return out[:, :n, :n]


def _add_stars(obs: np.ndarray, rng: np.random.Generator, stamp: np.ndarray, area: float, avoid: float) -> None:
    """Add a few foreground stars of stellar colours (PSF stamps) away from the galaxy centre."""
    _, n, _ = obs.shape
    s = stamp.shape[0]
    r = s // 2
    count = rng.poisson(2.0)
    for _ in range(count):
        for _try in range(10):
            x, y = rng.uniform(0, n, 2)
            if math.hypot(x - n / 2, y - n / 2) > avoid:
                break
        mag = 21.5 - 6.0 * rng.power(2.0)  # mostly faint, a few bright (15.5-21.5)
        t = rng.random()
        colour = sed(0.25 + 1.3 * t, 0.1 + 1.2 * t**1.6)  # white through yellow to red dwarfs
        flux = 10 ** ((22.5 - mag) / 2.5) * colour  # (K,)
        x0, y0 = int(x) - r, int(y) - r
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + s, n), min(y0 + s, n)
        if xa >= xb or ya >= yb:
            continue
        piece = stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
        obs[:, ya:yb, xa:xb] += (flux / area)[:, None, None] * piece[None]


def _background_galaxies(scene: Scene, rng: np.random.Generator) -> None:
    """Faint small galaxies scattered over the field."""
    half = scene.size * scene.scale / 2
    for _ in range(rng.poisson(2.5)):
        at = rng.uniform(-half, half, 2) - scene.centre
        mag = rng.uniform(19.5, 22.5)
        hlr = rng.uniform(0.8, 3.0) * PX
        m = projection(rng.uniform(0.3, 1), rng.uniform(0, math.pi))
        prof = transform(sersic(rng.choice([1.0, 2.0, 4.0]), hlr), m)
        colour = red_colour(rng) if rng.random() < 0.5 else disk_colour(rng)
        # drawn in a small stamp to keep it cheap
        st = 2 * int(math.ceil(8 * hlr / scene.scale)) + 1
        pix = (at + scene.centre) / scene.scale + (scene.size - 1) / 2
        ix, iy = int(round(pix[0])), int(round(pix[1]))
        img = (
            prof.withFlux(1.0)
            .drawImage(nx=st, ny=st, scale=scene.scale, method="no_pixel", offset=(pix[0] - ix, pix[1] - iy))
            .array
        )
        x0, y0 = ix - st // 2, iy - st // 2
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + st, scene.size), min(y0 + st, scene.size)
        if xa < xb and ya < yb:
            flux = 10 ** ((22.5 - mag) / 2.5) * colour
            scene.intrinsic[:, ya:yb, xa:xb] += flux[:, None, None] * img[None, ya - y0 : yb - y0, xa - x0 : xb - x0]


def _faint_sources(scene: Scene, rng: np.random.Generator) -> None:
    """The crowd of faint, mostly unresolved field galaxies of a deep survey cut-out (r 19-24.5 mag).

    Counts rise as 10^(0.35 m) (faint galaxy number counts); half-light radii 0.2-1 arcsec, smaller when
    fainter; colours a mix of red passive (g-r 1.2-1.8: distant ellipticals), blue star-forming and
    in-between galaxies, so the field is dotted with red and blue specks as DECaLS cut-outs are."""
    n = rng.poisson(rng.uniform(*FAINT_SOURCES))
    if n == 0:
        return
    half = scene.size * scene.scale / 2
    xy = rng.uniform(-half, half, (n, 2)) - scene.centre  # (P, 2) relative to the galaxy centre
    alpha, bright, faint = 0.35, 19.0, 24.5
    lo = 10 ** (alpha * (bright - faint))
    mag = faint + np.log10(lo + rng.uniform(0, 1, n) * (1 - lo)) / alpha  # (P,) power-law counts
    kind = rng.choice(3, n, p=[0.35, 0.45, 0.2])  # red, blue, in-between
    g_r = np.choose(kind, [rng.uniform(1.2, 1.8, n), rng.uniform(0.2, 0.6, n), rng.uniform(0.6, 1.2, n)])
    r_z = np.choose(kind, [rng.uniform(0.8, 1.3, n), rng.uniform(0.1, 0.5, n), rng.uniform(0.4, 0.9, n)])
    cols = np.stack([10 ** (-0.4 * g_r), np.ones(n), 10 ** (0.4 * r_z)], axis=1)  # (P, K)
    hlr = np.exp(rng.normal(math.log(0.5), 0.35, n)) * 10 ** (-0.1 * (mag - bright))  # arcsec
    for size_class in (hlr < 0.35, hlr >= 0.35):  # two widths keep the deposit vectorised
        if size_class.any():
            sel = np.flatnonzero(size_class)
            flux = 10 ** ((22.5 - mag[sel]) / 2.5)
            scene.add_points(xy[sel], flux, cols[sel], sigma=float(hlr[sel].mean()) / 1.18)


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: np.ndarray) -> np.ndarray:
    """(K, S, S) sky noise with the short-range correlation of resampled coadds (2x2 running mean).

    A fraction NOISE_COMMON of the variance is shared by the bands (grey noise): Galaxy10's images went
    through JPEG cut-outs, whose chroma subsampling leaves the sky noise mostly grey (inter-channel
    correlation about 0.8 in the real images)."""
    k, h, w_ = shape
    w = rng.standard_normal((k + 1, h + 1, w_ + 1), dtype=np.float32)
    w = (w[:, :-1, :-1] + w[:, 1:, :-1] + w[:, :-1, 1:] + w[:, 1:, 1:]) / 2  # (K + 1, S, S) unit variance
    a, b = math.sqrt(1 - NOISE_COMMON), math.sqrt(NOISE_COMMON)
    return (a * w[:k] + b * w[k:]) * sigma.astype(np.float32)[:, None, None]


def _sky_residual(rng: np.random.Generator) -> np.ndarray:
    """(K,) per-image sky left after background subtraction, in nanomaggies per reference pixel.

    Drawn in rendered levels (ADU of 255) per R, G, B channel, as measured on real Galaxy10 skies (R about
    33-35, G and B about 32-33), and converted back to the g, r, z bands through the stretch's slope."""
    adu = rng.normal(SKY_RESIDUAL_ADU[0], SKY_RESIDUAL_ADU[1])  # (C,) R, G, B
    per_adu = ADU_PER_UNIT**-1  # rendered level -> stretch input near the sky
    return (adu * per_adu / RGB_SCALES)[::-1].astype(np.float32)  # (K,) g, r, z


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """(S, S, C) uint8 through a JPEG encode/decode at `quality` (Pillow, 4:2:0 chroma subsampling)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buf).convert("RGB"))


def asinh_rgb(bands: np.ndarray) -> np.ndarray:
    """(K, S, S) g, r, z surface brightness (nanomaggies per reference pixel) -> (S, S, C) uint8 RGB.

    The Legacy Survey viewer's stretch: z, r, g scaled to R, G, B, a small offset m, then every channel
    multiplied by asinh(Q I) / (sqrt(Q) I) of the mean intensity I (colours kept, highlights compressed)."""
    scales = RGB_SCALES.astype(np.float32)[:, None, None]
    chans = np.maximum(bands[::-1].astype(np.float32) * scales + np.float32(RGB_M), 0.0)  # (C, S, S)
    i = chans.mean(axis=0)  # (S, S)
    f = np.arcsinh(np.float32(RGB_Q) * i) / np.float32(math.sqrt(RGB_Q) * 255**-1) / np.maximum(i, 1e-6)
    rgb = np.clip(chans * f[None] + 0.5, 0.0, 255.0)  # rounded to the nearest level by the cast
    return np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 2, 0))  # (S, S, C)


# ---------------------------------------------------------------- one image


def render_with_redshift(
    label: int, rng: np.random.Generator, size: int = 256, z: float | None = None, r_kpc: float | None = None
) -> tuple[np.ndarray, float]:
    """Render one galaxy of class `label` as (size, size, 3) uint8 RGB seen at redshift z; return (image, z).

    z (drawn from Galaxy10's distribution when None) sets the apparent size of the physical half-light radius
    r_kpc (drawn for the class when None), the dimming and the colour (``model.synth_redshift``). The draws do
    not depend on z or r_kpc: one generator state renders the same galaxy at any redshift."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label {label} is not in 0..{NUM_CLASSES - 1}")
    scale = PIXEL_SCALE * REFERENCE_SIZE / size
    scene = Scene(size, scale, rng.normal(0, 1.0, 2) * PX, np.zeros((3, size, size), dtype=np.float32))
    z_drawn, u_size, m_scatter = draw_redshift(rng), rng.random(), rng.normal(0, 0.3)
    z = z_drawn if z is None else checked_redshift(z)
    r_kpc = draw_radius(label, z, u_size) if r_kpc is None else float(r_kpc)
    hlr = apparent_radius(r_kpc, z)
    # v2's relation at Z_REF (brighter for bigger galaxies, roughly constant surface brightness, r ~ 14-17.7),
    # then moved to z by the distance modulus (flux = L / 4 pi D_L^2)
    mag = 17.8 - 4.0 * math.log10(apparent_radius(r_kpc, Z_REF) / (5 * PX)) + m_scatter + DISK_DIMMING[label]
    flux = 10 ** ((22.5 - min(max(mag, 13.5), 18.0) - distance_dimming(z)) / 2.5)
    if label == 0:
        draw_disturbed(scene, rng, flux, hlr)
    elif label == 1:
        draw_merging(scene, rng, flux, hlr)
    elif label == 2:
        draw_smooth(scene, rng, flux, hlr, (0.72, 1.0))
    elif label == 3:
        draw_smooth(scene, rng, flux, hlr, (0.4, 0.8))
    elif label == 4:
        draw_cigar(scene, rng, flux, hlr)
    elif label in (5, 6, 7):
        draw_spiral(scene, rng, flux, hlr, {5: "barred", 6: "tight", 7: "loose"}[label])
    else:
        draw_edge_on(scene, rng, flux, hlr, bulge=label == 9)
    k_correct(scene.intrinsic, z)  # the galaxy's own light only: the field sources lie at other redshifts
    _background_galaxies(scene, rng)
    _faint_sources(scene, rng)
    psf = _psf(rng)
    stamp = _psf_stamp(psf, scale)
    obs = _convolve(scene.intrinsic, stamp) / scene.area  # (K, S, S) per reference pixel
    _add_stars(obs, rng, stamp, scene.area, avoid=size * 0.12)
    ebv = rng.exponential(MEAN_EBV)  # Galactic dust along this line of sight dims and reddens everything
    obs *= (10 ** (-0.4 * ebv * EXTINCTION)).astype(np.float32)[:, None, None]
    depth = rng.uniform(0.8, 1.3) * rng.lognormal(0.0, 0.07, 3)  # (K,) the bands' depths vary independently
    sky = SKY_SIGMA * depth * (PX / scale)  # coarser pixels average the noise down
    obs += _correlated_noise(rng, obs.shape, sky)
    obs += _sky_residual(rng)[:, None, None]
    return jpeg(asinh_rgb(obs), rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)), z


def render_galaxy(label: int, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Render one galaxy of class `label` (0-9) as a (size, size, 3) uint8 DECaLS-like RGB cut-out."""
    return render_with_redshift(label, rng, size)[0]


# ---------------------------------------------------------------- the file


def _start_method() -> str:
    """'fork' (fast start, warm caches) when this process runs no other threads, else 'spawn' (fork can deadlock)."""
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _render_index(job: tuple[int, int, int, int]) -> tuple[np.ndarray, float, float, float]:
    """Render image `index` of a file: (image (S, S, C), ra, dec, redshift)."""
    seed, index, label, size = job
    rng = image_rng(seed, index)
    ra, dec, drawn = place_and_draw(label, rng)
    image, z = render_with_redshift(drawn, rng, size)
    if rng.random() < REDSHIFT_MISSING:  # unknown in the catalogue, as some real ones are: the image keeps its z
        z = math.nan
    return image, ra, dec, z


def synthesize(
    n: int,
    out: str | Path,
    *,
    size: int = 256,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write n synthetic galaxies to `out` in the Galaxy10 DECaLS HDF5 schema and return its path.

    Keys: images (N, S, S, 3) uint8 chunked per image, ans (N,) uint8, ra/dec (N,) float64, redshift (N,)
    float32, pxscale (N,) float32. Written under a temporary name and renamed at the end; the bytes of the
    images do not depend on `workers`. `progress(k)` gets the number of images finished so far."""
    if n < 1:
        raise UserError("n", f"must be at least 1, got {n}")
    if size < 16:
        raise UserError("size", f"must be at least 16 pixels, got {size}")
    if workers < 1:
        raise UserError("workers", f"must be at least 1, got {workers}")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(out.parent, "output folder does not exist")
    tmp = out.with_name(out.name + ".partial")
    labels = synth_labels(n, seed)
    jobs = [(seed, i, int(labels[i]), size) for i in range(n)]
    ra, dec = np.zeros(n), np.zeros(n)
    redshift = np.zeros(n, dtype=np.float32)
    pool = None
    try:
        with h5py.File(tmp, "w") as f:
            images = f.create_dataset(IMAGE_KEY, shape=(n, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3))
            if workers > 1 and n > 1:
                pool = mp.get_context(_start_method()).Pool(min(workers, n))
                results = pool.imap(_render_index, jobs, chunksize=max(1, min(8, n // (4 * workers))))
            else:
                results = map(_render_index, jobs)
            for i, (image, ra_i, dec_i, z_i) in enumerate(results):
                images[i] = image
                ra[i], dec[i], redshift[i] = ra_i, dec_i, z_i
                if progress is not None:
                    progress(i + 1)
            f.create_dataset(LABEL_KEY, data=labels)
            f.create_dataset("ra", data=ra)
            f.create_dataset("dec", data=dec)
            f.create_dataset("redshift", data=redshift)
            f.create_dataset("pxscale", data=np.full(n, PIXEL_SCALE * REFERENCE_SIZE / size, dtype=np.float32))
            f.attrs.update(generator=GENERATOR, version=SYNTH_VERSION, seed=seed, synthetic=True)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return out
