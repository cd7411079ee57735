"""The galaxies of the synthetic set (SPEC D2): colours, the scene they are drawn into, and one drawing per class.

Profiles are GalSim Sersic, exponential and inclined-disk models with spiral arms, star-forming knots, bars,
and dust lanes, drawn in the g, r and z bands (fluxes in nanomaggies); the interacting classes (tidal tails,
bridges, shells) are in ``model.synth_interacting``. ``model.synth`` adds the PSF, stars, background
galaxies and sky noise, and writes the file.

Dimension letters: S image side (pixels), K bands (3: g, r, z), P points (knots, stream particles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np

#: DECaLS pixel scale in arcsec per pixel at the reference size of 256 px.
PIXEL_SCALE = 0.262
REFERENCE_SIZE = 256

RED_DISK_FRACTION = 0.15  # spirals whose arms are no bluer than their disk (passive / red spirals)
BLUE_SMOOTH_FRACTION = 0.1  # smooth galaxies with disk-like colours (blue ellipticals)
PX = PIXEL_SCALE  # one reference (256-px) pixel in arcsec: sizes below are written as n * PX
GSP = galsim.GSParams(maximum_fft_size=4096, folding_threshold=1e-2)


# ---------------------------------------------------------------- colours


def sed(g_r: float, r_z: float) -> np.ndarray:
    """Flux ratios (g, r, z) normalised to r = 1 for the given g-r and r-z colours (mag)."""
    return np.array([10 ** (-0.4 * g_r), 1.0, 10 ** (0.4 * r_z)])


# Observed-frame colours at Galaxy10's redshifts (z ~ 0.02-0.15): the red sequence sits at g-r ~ 0.75-0.95,
# star-forming disks at 0.45-0.75 and young star-forming regions bluer still (SDSS / Legacy Survey colour-
# morphology relations: Strateva et al. 2001, Blanton & Moustakas 2009). The ranges overlap, as real ones do.
# g-r and r-z move together along the galaxy colour locus (both follow stellar age and dust): drawn apart, a
# red g-r with a blue r-z renders green in the viewer's colours, which real galaxies never are.
LOCUS_SLOPE, LOCUS_OFFSET, LOCUS_SCATTER = 0.55, 0.05, 0.04  # r-z = 0.55 (g-r) + 0.05, scatter 0.04 mag


def locus_colour(rng: np.random.Generator, g_r: tuple[float, float]) -> np.ndarray:
    """Flux ratios of a galaxy population with g-r uniform in the range and r-z on the colour locus."""
    gr = rng.uniform(*g_r)
    return sed(gr, LOCUS_SLOPE * gr + LOCUS_OFFSET + rng.normal(0.0, LOCUS_SCATTER))


def red_colour(rng: np.random.Generator) -> np.ndarray:
    """An old, yellow-red population (bulges, ellipticals)."""
    return locus_colour(rng, (0.72, 1.05))


def disk_colour(rng: np.random.Generator) -> np.ndarray:
    """A mixed-age disk population (yellow-white)."""
    return locus_colour(rng, (0.45, 0.8))


def blue_colour(rng: np.random.Generator) -> np.ndarray:
    """A young star-forming population (bluish-white arms and knots)."""
    return locus_colour(rng, (0.22, 0.55))


# ---------------------------------------------------------------- the scene


@dataclass
class Scene:
    """The band images being built for one cut-out; lengths in arcsec, fluxes in nanomaggies."""

    size: int  # S
    scale: float  # arcsec per pixel
    centre: np.ndarray  # (2,) galaxy centre (x, y) in arcsec from the image centre
    intrinsic: np.ndarray  # (K, S, S) light before the PSF, nanomaggies per pixel

    @property
    def area(self) -> float:
        """Pixel area in reference pixels: converts per-pixel flux to per-reference-pixel surface brightness."""
        return (self.scale / PX) ** 2

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, S) x and y pixel-centre coordinates in arcsec, relative to the image centre."""
        c = ((np.arange(self.size) - (self.size - 1) / 2) * self.scale).astype(np.float32)
        return np.meshgrid(c, c, indexing="xy")

    def add_profile(self, prof: galsim.GSObject, colour: np.ndarray, flux: float, at=(0.0, 0.0)) -> None:
        """Draw a unit-flux GalSim profile once (no PSF) and add it to every band with flux * colour."""
        offset = (np.asarray(at) + self.centre) / self.scale
        img = (
            prof.withFlux(1.0)
            .drawImage(nx=self.size, ny=self.size, scale=self.scale, method="no_pixel", offset=tuple(offset))
            .array
        )  # (S, S)
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


def projection(q: float, pa: float) -> np.ndarray:
    """(2, 2) matrix taking disk-plane (u, v) to sky (x, y): squash v by q, then rotate by pa."""
    c, s = math.cos(pa), math.sin(pa)
    return np.array([[c, -s], [s, c]]) @ np.diag([1.0, q])


def transform(prof: galsim.GSObject, m: np.ndarray) -> galsim.GSObject:
    """Apply a (2, 2) sky transformation to a GalSim profile."""
    return prof.transform(m[0, 0], m[0, 1], m[1, 0], m[1, 1])


def disk_coords(scene: Scene, m: np.ndarray, at=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) disk-plane radius and azimuth for every pixel of a disk projected by m centred at `at`."""
    x, y = scene.grid()
    x = x - float(scene.centre[0] + at[0])
    y = y - float(scene.centre[1] + at[1])
    inv = np.linalg.inv(m).astype(np.float32)
    u = inv[0, 0] * x + inv[0, 1] * y
    v = inv[1, 0] * x + inv[1, 1] * y
    return np.hypot(u, v), np.arctan2(v, u)


def sersic(n: float, hlr: float) -> galsim.Sersic:
    """A Sersic profile with index rounded to 0.5 (GalSim caches its tables per index)."""
    return galsim.Sersic(n=round(2 * n) / 2, half_light_radius=hlr, gsparams=GSP)


# ---------------------------------------------------------------- building blocks


def _spiral_arms(
    scene: Scene,
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
    r, th = disk_coords(scene, m, at)
    cot = 1.0 / math.tan(math.radians(pitch_deg))
    logr = np.log(np.maximum(r, 1e-3) / r_start)
    psi = n_arms * (th - theta0 - cot * logr)
    pattern = ((1 + np.cos(psi)) / 2) ** sharpness
    envelope = np.exp(-r / scale_length) * (1 - np.exp(-((r / r_start) ** 3)))
    arm_colour = blue_colour(rng) if rng.random() > RED_DISK_FRACTION else disk_colour(rng)  # some spirals are red
    scene.add_map(envelope * pattern, arm_colour * rng.uniform(0.9, 1.1, 3), flux)
    # knots on the ridges: radius ~ r exp(-r/h) beyond r_start, azimuth following the spiral
    rad = r_start * 0.9 + rng.gamma(2.0, scale_length * 0.8, n_knots)
    arm = rng.integers(0, n_arms, n_knots)
    phi = theta0 + 2 * math.pi * arm / n_arms + cot * np.log(rad / r_start) + rng.normal(0, 0.12, n_knots)
    uv = np.stack([rad * np.cos(phi), rad * np.sin(phi)], axis=1)  # (P, 2)
    xy = uv @ m.T + np.asarray(at)
    w = rng.lognormal(0.0, 0.8, n_knots)
    cols = np.stack([sed(g, z) for g, z in zip(rng.uniform(0.3, 0.55, n_knots), rng.uniform(0.1, 0.3, n_knots))])
    scene.add_points(xy, knot_flux * w / w.sum(), cols, sigma=rng.uniform(0.4, 1.0) * PX)


def smooth_body(scene: Scene, rng: np.random.Generator, hlr: float, q: float, pa: float, flux: float, at=(0, 0)):
    """An elliptical: Sersic core (n 2-4), sometimes with a faint extended envelope."""
    n = rng.choice([1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    m = projection(q, pa)
    colour = red_colour(rng) if rng.random() > BLUE_SMOOTH_FRACTION else disk_colour(rng)
    f_env = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else 0.0
    scene.add_profile(transform(sersic(n, hlr), m), colour, flux * (1 - f_env), at)
    if f_env > 0:
        m_env = projection(min(1.0, q * rng.uniform(1.0, 1.2)), pa)
        env = galsim.Exponential(half_light_radius=hlr * rng.uniform(2.0, 3.0), gsparams=GSP)
        scene.add_profile(transform(env, m_env), colour * sed(-0.05, -0.03), flux * f_env, at)


def disk_galaxy(scene: Scene, rng: np.random.Generator, hlr: float, flux: float, at=(0, 0), arms: bool = True):
    """A bulge + disk galaxy at a random orientation (used for companions and pairs)."""
    q = rng.uniform(0.35, 1.0)
    pa = rng.uniform(0, math.pi)
    m = projection(q, pa)
    bt = rng.uniform(0.2, 0.6)
    bulge = transform(sersic(rng.uniform(2, 4), hlr * rng.uniform(0.15, 0.3)), projection(max(q, 0.7), pa))
    disk = transform(galsim.Exponential(half_light_radius=hlr, gsparams=GSP), m)
    scene.add_profile(bulge, red_colour(rng), flux * bt, at)
    scene.add_profile(disk, disk_colour(rng), flux * (1 - bt) * 0.7, at)
    if arms:
        _spiral_arms(
            scene,
            rng,
            m,
            n_arms=2,
            pitch_deg=rng.uniform(15, 30),
            scale_length=hlr / 1.678,
            r_start=hlr * 0.3,
            theta0=rng.uniform(0, 2 * math.pi),
            flux=flux * (1 - bt) * 0.2,
            knot_flux=flux * (1 - bt) * 0.1,
            n_knots=20,
            sharpness=3.0,
            at=at,
        )
    else:
        scene.add_profile(disk, disk_colour(rng), flux * (1 - bt) * 0.3, at)


# ---------------------------------------------------------------- classes (return the main half-light radius)


def draw_smooth(scene: Scene, rng: np.random.Generator, flux: float, hlr: float, q_range: tuple[float, float]):
    """Classes 2-3: a smooth elliptical with axis ratio drawn from q_range."""
    smooth_body(scene, rng, hlr, rng.uniform(*q_range), rng.uniform(0, math.pi), flux)
    return hlr


def draw_cigar(scene: Scene, rng: np.random.Generator, flux: float, hlr: float) -> float:
    """Class 4: a very elongated smooth spindle (thicker and smoother than an edge-on disk, no lane)."""
    q = rng.uniform(0.18, 0.45)
    pa = rng.uniform(0, math.pi)
    m = projection(q, pa)
    colour = red_colour(rng) if rng.random() > BLUE_SMOOTH_FRACTION else disk_colour(rng)
    scene.add_profile(transform(sersic(rng.uniform(1.0, 2.5), hlr), m), colour, flux * 0.85)
    scene.add_profile(transform(sersic(3.0, hlr * 0.25), projection(min(1, q * 2), pa)), colour, flux * 0.15)
    return hlr


def draw_spiral(scene: Scene, rng: np.random.Generator, flux: float, hlr: float, kind: str) -> float:
    """Classes 5-7: bulge + exponential disk + log-spiral arms (with a bar for 'barred')."""
    q = rng.uniform(0.35, 1.0) if rng.random() < 0.5 else rng.uniform(0.7, 1.0)  # face-on to inclined
    pa = rng.uniform(0, math.pi)
    m = projection(q, pa)
    h = hlr / 1.678  # exponential scale length
    theta0 = rng.uniform(0, 2 * math.pi)
    if kind == "tight":
        bt, pitch, n_arms = rng.uniform(0.2, 0.5), rng.uniform(9, 16), int(rng.choice([2, 2, 3, 4]))
        r_start = h * rng.uniform(0.35, 0.6)
        arm_frac, sharp, n_knots = rng.uniform(0.25, 0.45), rng.uniform(2, 5), int(rng.integers(15, 50))
    elif kind == "loose":
        bt, pitch, n_arms = rng.uniform(0.05, 0.3), rng.uniform(22, 38), int(rng.choice([2, 2, 3]))
        r_start = h * rng.uniform(0.3, 0.6)
        arm_frac, sharp, n_knots = rng.uniform(0.3, 0.55), rng.uniform(1.5, 3.5), int(rng.integers(20, 70))
    else:  # barred
        bt, pitch, n_arms = rng.uniform(0.1, 0.35), rng.uniform(12, 26), 2
        r_start = h * rng.uniform(1.0, 1.8)  # bar semi-length: arms (or a ring) start at the bar ends
        arm_frac, sharp, n_knots = rng.uniform(0.25, 0.45), rng.uniform(2, 5), int(rng.integers(15, 50))
    bulge = transform(sersic(rng.uniform(1.5, 4), hlr * rng.uniform(0.1, 0.22)), projection(max(q, 0.8), pa))
    scene.add_profile(bulge, red_colour(rng), flux * bt)
    rest = flux * (1 - bt)
    if kind == "barred":
        f_bar = rng.uniform(0.25, 0.4)
        bar = sersic(0.5, r_start * 0.5)
        m_bar = m @ projection(rng.uniform(0.2, 0.3), theta0)  # a thin bar along theta0 in the disk plane
        scene.add_profile(transform(bar, m_bar), sed(rng.uniform(0.75, 0.9), rng.uniform(0.4, 0.5)), rest * f_bar)
        rest *= 1 - f_bar
    knot_frac = rng.uniform(0.02, 0.07)
    f_disk = rest * (1 - arm_frac - knot_frac)
    if kind == "barred":  # the bar sweeps out the inner disk: a disk with a shallow hole inside the bar radius
        r, _ = disk_coords(scene, m)
        scene.add_map(np.exp(-r / h) * (1 - 0.8 * np.exp(-((r / r_start) ** 2))), disk_colour(rng), f_disk)
    else:
        scene.add_profile(transform(galsim.Exponential(scale_radius=h, gsparams=GSP), m), disk_colour(rng), f_disk)
    _spiral_arms(
        scene,
        rng,
        m,
        n_arms=n_arms,
        pitch_deg=pitch,
        scale_length=h * 1.1,
        r_start=r_start,
        theta0=theta0,
        flux=rest * arm_frac,
        knot_flux=rest * knot_frac,
        n_knots=n_knots,
        sharpness=sharp,
    )
    return hlr


def draw_edge_on(scene: Scene, rng: np.random.Generator, flux: float, hlr: float, bulge: bool) -> float:
    """Classes 8-9: a thin inclined exponential disk, optionally with a bulge and a dust lane."""
    pa = rng.uniform(0, math.pi)
    incl = rng.uniform(82, 90)
    h = hlr / 1.678
    hz = h * (rng.uniform(0.12, 0.26) if not bulge else rng.uniform(0.1, 0.22))
    disk = galsim.InclinedExponential(incl * galsim.degrees, scale_radius=h, scale_height=hz, gsparams=GSP)
    # a sub-pixel Gaussian keeps the thin disk's FFT small; the PSF comes later
    smooth = galsim.Gaussian(sigma=0.4 * scene.scale, gsparams=GSP)
    disk = galsim.Convolve(disk.rotate(pa * galsim.radians), smooth)
    bt = rng.uniform(0.25, 0.55) if bulge else 0.0
    colour = disk_colour(rng) * sed(0.12, 0.08)  # seen through its own dust: redder than face-on
    scene.add_profile(disk, colour, flux * (1 - bt))
    if bulge:
        b_hlr = hlr * rng.uniform(0.18, 0.35)
        sph = transform(sersic(rng.uniform(2, 4), b_hlr), projection(rng.uniform(0.55, 0.85), pa))
        scene.add_profile(sph, red_colour(rng), flux * bt)
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
