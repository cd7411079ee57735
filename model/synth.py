"""Synthetic Galaxy10-format galaxies rendered with GalSim (SPEC D2), the offline stand-in for Galaxy10 DECaLS.

Each image is a 67 arcsec DECaLS-like cut-out (256 px at 0.262 arcsec/px; other sizes keep the field and
change the pixel scale): a galaxy of the requested class drawn in the g, r and z bands from Sersic,
exponential and inclined-disk profiles, spiral arms and star-forming knots, tidal tails and dust lanes,
faint background galaxies, convolved with a Moffat or Kolmogorov PSF, plus coloured foreground stars and
correlated sky noise, combined into RGB with the Legacy Survey's asinh stretch (z -> red, r -> green,
g -> blue). Fluxes are in nanomaggies. Everything an image needs comes from its own numpy Generator, so a
file is the same whatever the number of worker processes.

Dimension letters: N images, S image side (pixels), K bands (3: g, r, z), C colour channels (3: R, G, B),
P points (knots, stream particles).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import galsim
import h5py
import numpy as np

from model.errors import UserError
from model.galaxy10 import CLASS_FRACTIONS, IMAGE_KEY, LABEL_KEY, NUM_CLASSES

#: Bump when the look of the images changes (stored in the file's attrs).
SYNTH_VERSION = 1
GENERATOR = "galaxy-synth"
#: DECaLS pixel scale in arcsec per pixel at the reference size of 256 px.
PIXEL_SCALE = 0.262
REFERENCE_SIZE = 256
BANDS = ("g", "r", "z")

_PX = PIXEL_SCALE  # one reference (256-px) pixel in arcsec: sizes below are written as n * _PX
_GSP = galsim.GSParams(maximum_fft_size=4096, folding_threshold=1e-2)
_RGB_SCALES = np.array([2.2, 3.4, 6.0])  # (C,) multipliers for z, r, g as R, G, B (Legacy Survey viewer)
_RGB_Q = 20.0
_RGB_M = 0.015
_SKY_SIGMA = np.array([0.0035, 0.0045, 0.011])  # (K,) sky noise per reference pixel, nanomaggies
_C_OVER_H0_MPC = 4282.7  # c / H0 for H0 = 70 km/s/Mpc


# ---------------------------------------------------------------- colours


def sed(g_r: float, r_z: float) -> np.ndarray:
    """Flux ratios (g, r, z) normalised to r = 1 for the given g-r and r-z colours (mag)."""
    return np.array([10 ** (-0.4 * g_r), 1.0, 10 ** (0.4 * r_z)])


def _red(rng: np.random.Generator) -> np.ndarray:
    """An old, yellow-red population (bulges, ellipticals)."""
    return sed(rng.uniform(0.9, 1.05), rng.uniform(0.5, 0.65))


def _disk(rng: np.random.Generator) -> np.ndarray:
    """A mixed-age disk population (yellow-white)."""
    return sed(rng.uniform(0.62, 0.78), rng.uniform(0.35, 0.45))


def _blue(rng: np.random.Generator) -> np.ndarray:
    """A young star-forming population (blue arms and knots)."""
    return sed(rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.3))


# ---------------------------------------------------------------- the scene


@dataclass
class _Scene:
    """The band images being built for one cut-out; lengths in arcsec, fluxes in nanomaggies."""

    size: int  # S
    scale: float  # arcsec per pixel
    centre: np.ndarray  # (2,) galaxy centre (x, y) in arcsec from the image centre
    intrinsic: np.ndarray  # (K, S, S) light before the PSF, nanomaggies per pixel

    @property
    def area(self) -> float:
        """Pixel area in reference pixels: converts per-pixel flux to per-reference-pixel surface brightness."""
        return (self.scale / _PX) ** 2

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, S) x and y pixel-centre coordinates in arcsec, relative to the image centre."""
        c = ((np.arange(self.size) - (self.size - 1) / 2) * self.scale).astype(np.float32)
        return np.meshgrid(c, c, indexing="xy")

    def add_profile(self, prof: galsim.GSObject, colour: np.ndarray, flux: float, at=(0.0, 0.0)) -> None:
        """Draw a unit-flux GalSim profile once (no PSF) and add it to every band with flux * colour."""
        offset = (np.asarray(at) + self.centre) / self.scale
        img = prof.withFlux(1.0).drawImage(
            nx=self.size, ny=self.size, scale=self.scale, method="no_pixel", offset=tuple(offset)
        ).array  # (S, S)
        self.intrinsic += (flux * colour)[:, None, None] * img[None]

    def add_map(self, density: np.ndarray, colour: np.ndarray, flux: float) -> None:
        """Add a non-negative (S, S) light map, normalised to total flux * colour."""
        total = density.sum()
        if total > 0:
            self.intrinsic += (flux * colour / total)[:, None, None] * density[None]

    def add_points(self, xy: np.ndarray, flux: np.ndarray, colour: np.ndarray, sigma: float) -> None:
        """Deposit P Gaussian knots of width sigma (arcsec) at xy (P, 2) arcsec from the galaxy centre.

        colour is (K,) or (P, K); knots off the image are dropped."""
        if len(xy) == 0:
            return
        s = self.size
        pix = (xy + self.centre) / self.scale + (s - 1) / 2  # (P, 2) in pixel units
        sig = max(sigma / self.scale, 0.35)
        r = int(math.ceil(2.5 * sig))
        d = np.arange(-r, r + 1)
        base = np.rint(pix).astype(np.int64)  # (P, 2)
        frac = pix - base  # (P, 2)
        wx = np.exp(-0.5 * ((d[None, :] - frac[:, :1]) / sig) ** 2)  # (P, 2r+1)
        wy = np.exp(-0.5 * ((d[None, :] - frac[:, 1:]) / sig) ** 2)  # (P, 2r+1)
        w = wy[:, :, None] * wx[:, None, :]  # (P, 2r+1, 2r+1)
        w /= w.sum(axis=(1, 2), keepdims=True)
        xs = base[:, 0, None, None] + d[None, None, :]  # (P, 1, 2r+1)
        ys = base[:, 1, None, None] + d[None, :, None]  # (P, 2r+1, 1)
        xs, ys = np.broadcast_arrays(xs, ys)
        inside = (xs >= 0) & (xs < s) & (ys >= 0) & (ys < s)
        cols = np.broadcast_to(np.asarray(colour, dtype=np.float64), (len(xy), 3))  # (P, K)
        flat = ys[inside] * s + xs[inside]
        for k in range(3):
            wk = (w * (flux * cols[:, k])[:, None, None])[inside]
            self.intrinsic[k] += np.bincount(flat, weights=wk, minlength=s * s).reshape(s, s)


def _projection(q: float, pa: float) -> np.ndarray:
    """(2, 2) matrix taking disk-plane (u, v) to sky (x, y): squash v by q, then rotate by pa."""
    c, s = math.cos(pa), math.sin(pa)
    return np.array([[c, -s], [s, c]]) @ np.diag([1.0, q])


def _transform(prof: galsim.GSObject, m: np.ndarray) -> galsim.GSObject:
    """Apply a (2, 2) sky transformation to a GalSim profile."""
    return prof.transform(m[0, 0], m[0, 1], m[1, 0], m[1, 1])


def _disk_coords(scene: _Scene, m: np.ndarray, at=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) disk-plane radius and azimuth for every pixel of a disk projected by m centred at `at`."""
    x, y = scene.grid()
    x = x - float(scene.centre[0] + at[0])
    y = y - float(scene.centre[1] + at[1])
    inv = np.linalg.inv(m).astype(np.float32)
    u = inv[0, 0] * x + inv[0, 1] * y
    v = inv[1, 0] * x + inv[1, 1] * y
    return np.hypot(u, v), np.arctan2(v, u)


def _sersic(n: float, hlr: float) -> galsim.Sersic:
    """A Sersic profile with index rounded to 0.5 (GalSim caches its tables per index)."""
    return galsim.Sersic(n=round(2 * n) / 2, half_light_radius=hlr, gsparams=_GSP)


# ---------------------------------------------------------------- building blocks


def _spiral_arms(
    scene: _Scene,
    rng: np.random.Generator,
    m: np.ndarray,
    *,
    n_arms: int,
    pitch_deg: float,
    scale_length: float,
    r_start: float,
    theta0: float,
    flux: float,
    knot_flux: float,
    n_knots: int,
    sharpness: float,
    at=(0.0, 0.0),
) -> None:
    """Add log-spiral arms (a modulated exponential disk) and blue knots along their ridges."""
    r, th = _disk_coords(scene, m, at)
    cot = 1.0 / math.tan(math.radians(pitch_deg))
    logr = np.log(np.maximum(r, 1e-3) / r_start)
    psi = n_arms * (th - theta0 - cot * logr)
    pattern = ((1 + np.cos(psi)) / 2) ** sharpness
    envelope = np.exp(-r / scale_length) * (1 - np.exp(-((r / r_start) ** 3)))
    scene.add_map(envelope * pattern, _blue(rng) * rng.uniform(0.85, 1.15, 3), flux)
    # knots on the ridges: radius ~ r exp(-r/h) beyond r_start, azimuth following the spiral
    rad = r_start * 0.9 + rng.gamma(2.0, scale_length * 0.8, n_knots)
    arm = rng.integers(0, n_arms, n_knots)
    phi = theta0 + 2 * math.pi * arm / n_arms + cot * np.log(rad / r_start) + rng.normal(0, 0.12, n_knots)
    uv = np.stack([rad * np.cos(phi), rad * np.sin(phi)], axis=1)  # (P, 2)
    xy = uv @ m.T + np.asarray(at)
    w = rng.lognormal(0.0, 0.8, n_knots)
    cols = np.stack([sed(g, z) for g, z in zip(rng.uniform(0.15, 0.45, n_knots), rng.uniform(0.05, 0.25, n_knots))])
    scene.add_points(xy, knot_flux * w / w.sum(), cols, sigma=rng.uniform(0.4, 1.0) * _PX)


def _stream(
    rng: np.random.Generator,
    start: np.ndarray,
    angle: float,
    length: float,
    curl: float,
    width: float,
    n: int,
) -> np.ndarray:
    """(P, 2) particle positions along a curved tidal stream leaving `start` in direction `angle`."""
    t = rng.uniform(0, 1, n) ** 1.3  # denser (brighter) near the galaxy, fading outwards
    theta = angle + curl * t
    r = length * t
    centre = start + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    spread = width * (0.4 + t)[:, None] * rng.normal(0, 1, (n, 2))
    return centre + spread


def _smooth_body(scene: _Scene, rng: np.random.Generator, hlr: float, q: float, pa: float, flux: float, at=(0, 0)):
    """An elliptical: Sersic core (n 2-4), sometimes with a faint extended envelope."""
    n = rng.choice([2.0, 2.5, 3.0, 3.5, 4.0])
    m = _projection(q, pa)
    colour = _red(rng)
    f_env = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else 0.0
    scene.add_profile(_transform(_sersic(n, hlr), m), colour, flux * (1 - f_env), at)
    if f_env > 0:
        m_env = _projection(min(1.0, q * rng.uniform(1.0, 1.2)), pa)
        env = galsim.Exponential(half_light_radius=hlr * rng.uniform(2.0, 3.0), gsparams=_GSP)
        scene.add_profile(_transform(env, m_env), colour * sed(-0.05, -0.03), flux * f_env, at)


def _disk_galaxy(scene: _Scene, rng: np.random.Generator, hlr: float, flux: float, at=(0, 0), arms: bool = True):
    """A bulge + disk galaxy at a random orientation (used for companions and pairs)."""
    q = rng.uniform(0.35, 1.0)
    pa = rng.uniform(0, math.pi)
    m = _projection(q, pa)
    bt = rng.uniform(0.2, 0.6)
    bulge = _transform(_sersic(rng.uniform(2, 4), hlr * rng.uniform(0.15, 0.3)), _projection(max(q, 0.7), pa))
    disk = _transform(galsim.Exponential(half_light_radius=hlr, gsparams=_GSP), m)
    scene.add_profile(bulge, _red(rng), flux * bt, at)
    scene.add_profile(disk, _disk(rng), flux * (1 - bt) * 0.7, at)
    if arms:
        _spiral_arms(scene, rng, m, n_arms=2, pitch_deg=rng.uniform(15, 30), scale_length=hlr / 1.678,
                     r_start=hlr * 0.3, theta0=rng.uniform(0, 2 * math.pi), flux=flux * (1 - bt) * 0.2,
                     knot_flux=flux * (1 - bt) * 0.1, n_knots=20, sharpness=3.0, at=at)
    else:
        scene.add_profile(disk, _disk(rng), flux * (1 - bt) * 0.3, at)


# ---------------------------------------------------------------- classes (return the main half-light radius)


def _draw_smooth(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float, q_range: tuple[float, float]):
    """Classes 2-3: a smooth elliptical with axis ratio drawn from q_range."""
    _smooth_body(scene, rng, hlr, rng.uniform(*q_range), rng.uniform(0, math.pi), flux)
    return hlr


def _draw_cigar(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float) -> float:
    """Class 4: a very elongated smooth spindle (thicker and smoother than an edge-on disk, no lane)."""
    q = rng.uniform(0.2, 0.36)
    pa = rng.uniform(0, math.pi)
    m = _projection(q, pa)
    colour = _red(rng)
    scene.add_profile(_transform(_sersic(rng.uniform(1.0, 2.5), hlr), m), colour, flux * 0.85)
    scene.add_profile(_transform(_sersic(3.0, hlr * 0.25), _projection(min(1, q * 2), pa)), colour, flux * 0.15)
    return hlr


def _draw_spiral(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float, kind: str) -> float:
    """Classes 5-7: bulge + exponential disk + log-spiral arms (with a bar for 'barred')."""
    q = rng.uniform(0.5, 1.0)
    pa = rng.uniform(0, math.pi)
    m = _projection(q, pa)
    h = hlr / 1.678  # exponential scale length
    theta0 = rng.uniform(0, 2 * math.pi)
    if kind == "tight":
        bt, pitch, n_arms = rng.uniform(0.15, 0.4), rng.uniform(9, 15), int(rng.choice([2, 2, 3]))
        r_start = h * rng.uniform(0.35, 0.6)
        arm_frac, sharp, n_knots = rng.uniform(0.45, 0.6), rng.uniform(4, 8), int(rng.integers(30, 80))
    elif kind == "loose":
        bt, pitch, n_arms = rng.uniform(0.03, 0.15), rng.uniform(24, 38), int(rng.choice([2, 2, 3]))
        r_start = h * rng.uniform(0.3, 0.6)
        arm_frac, sharp, n_knots = rng.uniform(0.45, 0.6), rng.uniform(2, 4), int(rng.integers(40, 120))
    else:  # barred
        bt, pitch, n_arms = rng.uniform(0.05, 0.2), rng.uniform(14, 26), 2
        r_start = h * rng.uniform(1.2, 1.9)  # bar semi-length: arms start at the bar ends
        arm_frac, sharp, n_knots = rng.uniform(0.35, 0.5), rng.uniform(3, 6), int(rng.integers(30, 80))
    bulge = _transform(_sersic(rng.uniform(1.5, 4), hlr * rng.uniform(0.1, 0.22)), _projection(max(q, 0.8), pa))
    scene.add_profile(bulge, _red(rng), flux * bt)
    rest = flux * (1 - bt)
    if kind == "barred":
        f_bar = rng.uniform(0.25, 0.4)
        bar = _sersic(0.5, r_start * 0.5)
        m_bar = m @ _projection(rng.uniform(0.2, 0.3), theta0)  # a thin bar along theta0 in the disk plane
        scene.add_profile(_transform(bar, m_bar), sed(rng.uniform(0.75, 0.9), rng.uniform(0.4, 0.5)), rest * f_bar)
        rest *= 1 - f_bar
    knot_frac = rng.uniform(0.06, 0.14)
    f_disk = rest * (1 - arm_frac - knot_frac)
    if kind == "barred":  # the bar sweeps out the inner disk: a disk with a shallow hole inside the bar radius
        r, _ = _disk_coords(scene, m)
        scene.add_map(np.exp(-r / h) * (1 - 0.8 * np.exp(-((r / r_start) ** 2))), _disk(rng), f_disk)
    else:
        scene.add_profile(_transform(galsim.Exponential(scale_radius=h, gsparams=_GSP), m), _disk(rng), f_disk)
    _spiral_arms(scene, rng, m, n_arms=n_arms, pitch_deg=pitch, scale_length=h * 1.1, r_start=r_start,
                 theta0=theta0, flux=rest * arm_frac, knot_flux=rest * knot_frac, n_knots=n_knots, sharpness=sharp)
    return hlr


def _draw_edge_on(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float, bulge: bool) -> float:
    """Classes 8-9: a thin inclined exponential disk, optionally with a bulge and a dust lane."""
    pa = rng.uniform(0, math.pi)
    incl = rng.uniform(86, 90)
    h = hlr / 1.678
    hz = h * (rng.uniform(0.06, 0.11) if not bulge else rng.uniform(0.08, 0.14))
    disk = galsim.InclinedExponential(incl * galsim.degrees, scale_radius=h, scale_height=hz, gsparams=_GSP)
    # a sub-pixel Gaussian keeps the thin disk's FFT small; the PSF comes later
    smooth = galsim.Gaussian(sigma=0.4 * scene.scale, gsparams=_GSP)
    disk = galsim.Convolve(disk.rotate(pa * galsim.radians), smooth)
    bt = rng.uniform(0.25, 0.55) if bulge else 0.0
    colour = _disk(rng) if bulge else sed(rng.uniform(0.35, 0.6), rng.uniform(0.2, 0.35))
    scene.add_profile(disk, colour, flux * (1 - bt))
    if bulge:
        b_hlr = hlr * rng.uniform(0.18, 0.35)
        sph = _transform(_sersic(rng.uniform(2, 4), b_hlr), _projection(rng.uniform(0.55, 0.85), pa))
        scene.add_profile(sph, _red(rng), flux * bt)
    tau = rng.uniform(0.3, 0.7) if bulge else (rng.uniform(0.2, 0.5) if rng.random() < 0.4 else 0.0)
    if tau > 0:  # a dust lane along the mid-plane, slightly offset (the disk is not exactly edge-on)
        x, y = scene.grid()
        x, y = x - float(scene.centre[0]), y - float(scene.centre[1])
        along = x * math.cos(pa) + y * math.sin(pa)
        across = -x * math.sin(pa) + y * math.cos(pa)
        width = max(hz * 0.6, 0.5 * scene.scale)
        offset = hz * rng.uniform(-0.6, 0.6)
        lane = tau * np.exp(-0.5 * ((across - offset) / width) ** 2) * np.exp(-np.abs(along) / (2.5 * h))
        scene.intrinsic *= 1 - lane[None]
    return hlr


def _draw_merging(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float) -> float:
    """Class 1: two galaxies close together with tidal tails and often a bridge."""
    ratio = rng.uniform(0.35, 1.0)  # secondary / primary flux
    hlr2 = hlr * ratio**0.5 * rng.uniform(0.8, 1.1)
    sep = hlr * (rng.uniform(1.0, 1.8) if rng.random() < 0.3 else rng.uniform(1.8, 3.5))
    sep = min(sep, 70 * _PX)  # the pair stays well inside the frame
    ang = rng.uniform(0, 2 * math.pi)
    e = np.array([math.cos(ang), math.sin(ang)])
    p1, p2 = -e * sep * ratio / (1 + ratio), e * sep / (1 + ratio)
    f1, f2 = flux / (1 + ratio), flux * ratio / (1 + ratio)
    f_tidal = rng.uniform(0.2, 0.35)
    for p, f, r in ((p1, f1, hlr), (p2, f2, hlr2)):
        if rng.random() < 0.55:
            _smooth_body(scene, rng, r, rng.uniform(0.5, 1.0), rng.uniform(0, math.pi), f * (1 - f_tidal), at=p)
        else:
            _disk_galaxy(scene, rng, r, f * (1 - f_tidal), at=p, arms=rng.random() < 0.5)
    # tails leave each galaxy roughly away from the other and curl the same way (prograde encounter)
    curl = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.2)
    colour = sed(rng.uniform(0.35, 0.6), rng.uniform(0.15, 0.35))
    for p, f, r, away in ((p1, f1, hlr, ang + math.pi), (p2, f2, hlr2, ang)):
        length = min(r * rng.uniform(3.0, 6.0), 90 * _PX)
        pts = _stream(rng, p, away + rng.normal(0, 0.4), length, curl, r * rng.uniform(0.2, 0.4), 400)
        scene.add_points(pts, np.full(len(pts), f * f_tidal * 0.7 / len(pts)), colour, sigma=r * 0.25)
    if rng.random() < 0.7:  # a bridge between the two
        t = rng.uniform(0, 1, 200)
        bend = rng.normal(0, 0.3) * sep
        normal = np.array([-e[1], e[0]])
        mid = p1[None] + t[:, None] * (p2 - p1)[None] + (4 * t * (1 - t) * bend)[:, None] * normal[None]
        pts = mid + rng.normal(0, hlr * 0.15, (200, 2))
        scene.add_points(pts, np.full(200, flux * f_tidal * 0.2 / 200), colour, sigma=hlr * 0.2)
    return hlr


def _draw_disturbed(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float) -> float:
    """Class 0: irregular and lopsided: either a clumpy irregular or a galaxy with shells and a plume."""
    side = rng.uniform(0, 2 * math.pi)  # the direction the debris leans to
    e = np.array([math.cos(side), math.sin(side)])
    if rng.random() < 0.55:
        _clumpy_irregular(scene, rng, flux * 0.85, hlr, side)
    else:
        _shell_galaxy(scene, rng, flux * 0.85, hlr, side)
    n_pl = 300  # a faint plume or fan of debris on the lopsided side
    pts = _stream(rng, 0.4 * hlr * e, side + rng.normal(0, 0.5), hlr * rng.uniform(2.0, 4.0), rng.normal(0, 1.2),
                  hlr * rng.uniform(0.4, 0.8), n_pl)
    scene.add_points(pts, np.full(n_pl, flux * 0.15 / n_pl), _disk(rng), sigma=hlr * 0.3)
    return hlr


def _clumpy_irregular(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float, side: float) -> None:
    """A low-concentration body with blobs strung out to one side and bright blue clumps (RandomKnots)."""
    q = rng.uniform(0.4, 1.0)
    m = _projection(q, rng.uniform(0, math.pi))
    scene.add_profile(_transform(_sersic(rng.choice([0.5, 1.0]), hlr), m), _disk(rng), flux * rng.uniform(0.3, 0.45))
    n_blobs = int(rng.integers(2, 5))
    w = rng.dirichlet(np.ones(n_blobs)) * flux * 0.35
    for i in range(n_blobs):
        dist = hlr * rng.uniform(0.4, 1.6)
        ang = side + rng.normal(0, 0.9)
        blob = galsim.Exponential(half_light_radius=hlr * rng.uniform(0.25, 0.7), gsparams=_GSP)
        scene.add_profile(_transform(blob, _projection(rng.uniform(0.3, 1), rng.uniform(0, math.pi))),
                          _blue(rng) if rng.random() < 0.6 else _disk(rng), w[i],
                          at=(dist * math.cos(ang), dist * math.sin(ang)))
    knots = galsim.RandomKnots(int(rng.integers(8, 30)), half_light_radius=hlr * 1.3, flux=1.0,
                               rng=galsim.BaseDeviate(int(rng.integers(1, 2**31))))
    shift = 0.5 * hlr * np.array([math.cos(side), math.sin(side)])
    pts = knots.points @ m.T + shift  # (P, 2), the clumps sit off-centre
    kw = rng.lognormal(0, 0.9, len(pts))
    scene.add_points(pts, flux * rng.uniform(0.12, 0.22) * kw / kw.sum(), _blue(rng), sigma=rng.uniform(0.6, 1.6) * _PX)


def _shell_galaxy(scene: _Scene, rng: np.random.Generator, flux: float, hlr: float, side: float) -> None:
    """A smooth or disky galaxy, off-centre in its own envelope, with interleaved shells on alternating sides."""
    q = rng.uniform(0.55, 1.0)
    pa = rng.uniform(0, math.pi)
    m = _projection(q, pa)
    colour = _red(rng) if rng.random() < 0.5 else _disk(rng)
    scene.add_profile(_transform(_sersic(rng.choice([1.0, 2.0, 3.0]), hlr * 0.7), m), colour, flux * 0.5)
    lop = galsim.Exponential(half_light_radius=hlr * 1.6, gsparams=_GSP)
    scene.add_profile(_transform(lop, _projection(q * rng.uniform(0.6, 1.0), pa + rng.normal(0, 0.4))), colour,
                      flux * 0.4, at=tuple(hlr * rng.uniform(0.5, 1.0) * np.array([math.cos(side), math.sin(side)])))
    r, th = _disk_coords(scene, _projection(rng.uniform(0.75, 1.0), pa))
    shells = np.zeros_like(r)
    for k in range(int(rng.integers(1, 4))):
        rk = hlr * (1.3 + 1.1 * k) * rng.uniform(0.9, 1.1)
        dth = np.angle(np.exp(1j * (th - side - math.pi * k + rng.normal(0, 0.3))))  # alternate sides
        arc = np.exp(-0.5 * ((r - rk) / (0.1 * rk)) ** 2) * np.exp(-0.5 * (dth / 0.5) ** 2)
        shells += arc * (r < rk * 1.05) / (1 + k)  # sharp outer edge, fainter further out
    scene.add_map(shells, colour * sed(-0.1, -0.05), flux * 0.1)


# ---------------------------------------------------------------- PSF, stars, noise, colour


def _psf(rng: np.random.Generator) -> galsim.GSObject:
    """A DECaLS-like PSF: Moffat (beta 2.5-4) or Kolmogorov, FWHM 1.0-1.6 arcsec, slightly elliptical."""
    fwhm = rng.uniform(1.0, 1.6)
    if rng.random() < 0.75:
        psf = galsim.Moffat(beta=rng.uniform(2.5, 4.0), fwhm=fwhm, gsparams=_GSP)
    else:
        psf = galsim.Kolmogorov(fwhm=fwhm, gsparams=_GSP)
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
    count = rng.poisson(1.2)
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


def _background_galaxies(scene: _Scene, rng: np.random.Generator) -> None:
    """Faint small galaxies scattered over the field."""
    half = scene.size * scene.scale / 2
    for _ in range(rng.poisson(2.5)):
        at = rng.uniform(-half, half, 2) - scene.centre
        mag = rng.uniform(19.5, 22.5)
        hlr = rng.uniform(0.8, 3.0) * _PX
        m = _projection(rng.uniform(0.3, 1), rng.uniform(0, math.pi))
        prof = _transform(_sersic(rng.choice([1.0, 2.0, 4.0]), hlr), m)
        colour = _red(rng) if rng.random() < 0.5 else _disk(rng)
        # drawn in a small stamp to keep it cheap
        st = 2 * int(math.ceil(8 * hlr / scene.scale)) + 1
        pix = (at + scene.centre) / scene.scale + (scene.size - 1) / 2
        ix, iy = int(round(pix[0])), int(round(pix[1]))
        img = prof.withFlux(1.0).drawImage(nx=st, ny=st, scale=scene.scale, method="no_pixel",
                                           offset=(pix[0] - ix, pix[1] - iy)).array
        x0, y0 = ix - st // 2, iy - st // 2
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + st, scene.size), min(y0 + st, scene.size)
        if xa < xb and ya < yb:
            flux = 10 ** ((22.5 - mag) / 2.5) * colour
            scene.intrinsic[:, ya:yb, xa:xb] += flux[:, None, None] * img[None, ya - y0 : yb - y0, xa - x0 : xb - x0]


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: np.ndarray) -> np.ndarray:
    """(K, S, S) sky noise with the short-range correlation of resampled coadds (2x2 running mean)."""
    w = rng.standard_normal((shape[0], shape[1] + 1, shape[2] + 1), dtype=np.float32)
    w = (w[:, :-1, :-1] + w[:, 1:, :-1] + w[:, :-1, 1:] + w[:, 1:, 1:]) / 2  # unit variance
    return w * sigma.astype(np.float32)[:, None, None]


def asinh_rgb(bands: np.ndarray) -> np.ndarray:
    """(K, S, S) g, r, z surface brightness (nanomaggies per reference pixel) -> (S, S, C) uint8 RGB.

    The Legacy Survey viewer's stretch: z, r, g scaled to R, G, B, a small offset m, then every channel
    multiplied by asinh(Q I) / (sqrt(Q) I) of the mean intensity I (colours kept, highlights compressed)."""
    scales = _RGB_SCALES.astype(np.float32)[:, None, None]
    chans = np.maximum(bands[::-1].astype(np.float32) * scales + np.float32(_RGB_M), 0.0)  # (C, S, S)
    i = chans.mean(axis=0)  # (S, S)
    f = np.arcsinh(np.float32(_RGB_Q) * i) / np.float32(math.sqrt(_RGB_Q) * 255 ** -1) / np.maximum(i, 1e-6)
    rgb = np.clip(chans * f[None] + 0.5, 0.0, 255.0)  # rounded to the nearest level by the cast
    return np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 2, 0))  # (S, S, C)


# ---------------------------------------------------------------- one image


def _apparent_size(label: int, rng: np.random.Generator) -> float:
    """Half-light radius in arcsec for the class (reference pixels: a few to ~25)."""
    lo, hi = {
        0: (7, 18), 1: (6, 15), 2: (5, 18), 3: (6, 18), 4: (7, 20),
        5: (10, 28), 6: (12, 28), 7: (10, 28), 8: (12, 30), 9: (12, 30),
    }[label]
    return math.exp(rng.uniform(math.log(lo), math.log(hi))) * _PX


def render_with_redshift(label: int, rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, float]:
    """Render one galaxy of class `label` as (size, size, 3) uint8 RGB, with a redshift matching its size."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label {label} is not in 0..{NUM_CLASSES - 1}")
    scale = PIXEL_SCALE * REFERENCE_SIZE / size
    scene = _Scene(size, scale, rng.normal(0, 1.0, 2) * _PX, np.zeros((3, size, size), dtype=np.float32))
    hlr = _apparent_size(label, rng)
    # brighter for bigger galaxies: roughly constant surface brightness, r ~ 14-17.7 mag
    mag = 17.8 - 4.0 * math.log10(hlr / (5 * _PX)) + rng.normal(0, 0.3)
    flux = 10 ** ((22.5 - min(max(mag, 13.5), 18.0)) / 2.5)
    if label == 0:
        _draw_disturbed(scene, rng, flux, hlr)
    elif label == 1:
        _draw_merging(scene, rng, flux, hlr)
    elif label == 2:
        _draw_smooth(scene, rng, flux, hlr, (0.8, 1.0))
    elif label == 3:
        _draw_smooth(scene, rng, flux, hlr, (0.45, 0.72))
    elif label == 4:
        _draw_cigar(scene, rng, flux, hlr)
    elif label in (5, 6, 7):
        _draw_spiral(scene, rng, flux, hlr, {5: "barred", 6: "tight", 7: "loose"}[label])
    else:
        _draw_edge_on(scene, rng, flux, hlr, bulge=label == 9)
    _background_galaxies(scene, rng)
    psf = _psf(rng)
    stamp = _psf_stamp(psf, scale)
    obs = _convolve(scene.intrinsic, stamp) / scene.area  # (K, S, S) per reference pixel
    _add_stars(obs, rng, stamp, scene.area, avoid=size * 0.12)
    sky = _SKY_SIGMA * rng.uniform(0.8, 1.3) * (_PX / scale)  # coarser pixels average the noise down
    obs += _correlated_noise(rng, obs.shape, sky)
    # physical half-light radius ~ 3-6 kpc; D_A = R / theta, with D_A ~ (c/H0) z / (1 + z)
    r_kpc = rng.lognormal(math.log(4.0), 0.3) * (1.5 if label in (5, 6, 7, 8, 9) else 1.0)
    x = r_kpc / 1000 / (hlr / 206265) / _C_OVER_H0_MPC
    redshift = float(np.clip(x / max(1 - x, 1e-3), 0.01, 0.3))
    return asinh_rgb(obs), redshift


def render_galaxy(label: int, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Render one galaxy of class `label` (0-9) as a (size, size, 3) uint8 DECaLS-like RGB cut-out."""
    return render_with_redshift(label, rng, size)[0]


# ---------------------------------------------------------------- the file


def class_counts(n: int) -> np.ndarray:
    """(10,) image count per class for n images: Galaxy10 proportions, rounded by largest remainder to sum n."""
    exact = n * CLASS_FRACTIONS
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def synth_labels(n: int, seed: int) -> np.ndarray:
    """(N,) uint8 labels in exact Galaxy10 proportions, shuffled deterministically by seed."""
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), class_counts(n))
    np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))).shuffle(labels)
    return labels


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for image `index` of a file made with `seed` (independent of the worker count)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


def _start_method() -> str:
    """'fork' (fast start, warm caches) when this process runs no other threads, else 'spawn' (fork can deadlock)."""
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _render_index(job: tuple[int, int, int, int]) -> tuple[np.ndarray, float, float, float]:
    """Render image `index` of a file: (image (S, S, C), ra, dec, redshift)."""
    seed, index, label, size = job
    rng = image_rng(seed, index)
    ra = rng.uniform(0.0, 360.0)
    dec = math.degrees(math.asin(rng.uniform(math.sin(math.radians(-20)), math.sin(math.radians(35)))))
    image, z = render_with_redshift(label, rng, size)
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
        raise UserError("--n", f"must be at least 1, got {n}")
    if size < 16:
        raise UserError("--size", f"must be at least 16 pixels, got {size}")
    if workers < 1:
        raise UserError("--workers", f"must be at least 1, got {workers}")
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
