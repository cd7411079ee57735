"""The interacting classes of the synthetic set (SPEC D2): merging pairs with tidal tails and bridges (class 1),
and disturbed galaxies, clumpy irregulars or shell galaxies with a debris plume (class 0).

Built from the profiles and colours of ``model.synth_galaxies``; fluxes in nanomaggies, lengths in arcsec.

Dimension letters: S image side (pixels), K bands (3: g, r, z), P points (knots, stream particles).
"""

from __future__ import annotations

import math

import galsim
import numpy as np

from model.synth_galaxies import (
    GSP,
    PX,
    Scene,
    blue_colour,
    disk_colour,
    disk_coords,
    disk_galaxy,
    projection,
    red_colour,
    sed,
    sersic,
    smooth_body,
    transform,
)


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


def draw_merging(scene: Scene, rng: np.random.Generator, flux: float, hlr: float) -> float:
    """Class 1: two galaxies close together with tidal tails and often a bridge."""
    ratio = rng.uniform(0.35, 1.0)  # secondary / primary flux
    hlr2 = hlr * ratio**0.5 * rng.uniform(0.8, 1.1)
    sep = hlr * (rng.uniform(1.0, 1.8) if rng.random() < 0.3 else rng.uniform(1.8, 3.5))
    sep = min(sep, 70 * PX)  # the pair stays well inside the frame
    ang = rng.uniform(0, 2 * math.pi)
    e = np.array([math.cos(ang), math.sin(ang)])
    p1 = -e * sep * ratio / (1 + ratio) * rng.uniform(0.0, 0.5)  # the cut-out is centred near the primary
    p2 = p1 + e * sep
    f1, f2 = flux / (1 + ratio), flux * ratio / (1 + ratio)
    f_tidal = rng.uniform(0.2, 0.35)
    for p, f, r in ((p1, f1, hlr), (p2, f2, hlr2)):
        if rng.random() < 0.55:
            smooth_body(scene, rng, r, rng.uniform(0.5, 1.0), rng.uniform(0, math.pi), f * (1 - f_tidal), at=p)
        else:
            disk_galaxy(scene, rng, r, f * (1 - f_tidal), at=p, arms=rng.random() < 0.5)
    # tails leave each galaxy roughly away from the other and curl the same way (prograde encounter)
    curl = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.2)
    colour = sed(rng.uniform(0.35, 0.6), rng.uniform(0.15, 0.35))
    for p, f, r, away in ((p1, f1, hlr, ang + math.pi), (p2, f2, hlr2, ang)):
        length = min(r * rng.uniform(3.0, 6.0), 90 * PX)
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


def draw_disturbed(scene: Scene, rng: np.random.Generator, flux: float, hlr: float) -> float:
    """Class 0: irregular and lopsided: either a clumpy irregular or a galaxy with shells and a plume."""
    side = rng.uniform(0, 2 * math.pi)  # the direction the debris leans to
    e = np.array([math.cos(side), math.sin(side)])
    if rng.random() < 0.55:
        _clumpy_irregular(scene, rng, flux * 0.85, hlr, side)
    else:
        _shell_galaxy(scene, rng, flux * 0.85, hlr, side)
    n_pl = 300  # a faint plume or fan of debris on the lopsided side
    pts = _stream(
        rng,
        0.4 * hlr * e,
        side + rng.normal(0, 0.5),
        hlr * rng.uniform(2.0, 4.0),
        rng.normal(0, 1.2),
        hlr * rng.uniform(0.4, 0.8),
        n_pl,
    )
    scene.add_points(pts, np.full(n_pl, flux * 0.15 / n_pl), disk_colour(rng), sigma=hlr * 0.3)
    return hlr


def _clumpy_irregular(scene: Scene, rng: np.random.Generator, flux: float, hlr: float, side: float) -> None:
    """A low-concentration body with blobs strung out to one side and bright blue clumps (RandomKnots)."""
    q = rng.uniform(0.4, 1.0)
    m = projection(q, rng.uniform(0, math.pi))
    scene.add_profile(
        transform(sersic(rng.choice([0.5, 1.0]), hlr), m), disk_colour(rng), flux * rng.uniform(0.3, 0.45)
    )
    n_blobs = int(rng.integers(2, 5))
    w = rng.dirichlet(np.ones(n_blobs)) * flux * 0.35
    for i in range(n_blobs):
        dist = hlr * rng.uniform(0.4, 1.6)
        ang = side + rng.normal(0, 0.9)
        blob = galsim.Exponential(half_light_radius=hlr * rng.uniform(0.25, 0.7), gsparams=GSP)
        scene.add_profile(
            transform(blob, projection(rng.uniform(0.3, 1), rng.uniform(0, math.pi))),
            blue_colour(rng) if rng.random() < 0.6 else disk_colour(rng),
            w[i],
            at=(dist * math.cos(ang), dist * math.sin(ang)),
        )
    knots = galsim.RandomKnots(
        int(rng.integers(8, 30)),
        half_light_radius=hlr * 1.3,
        flux=1.0,
        rng=galsim.BaseDeviate(int(rng.integers(1, 2**31))),
    )
    shift = 0.5 * hlr * np.array([math.cos(side), math.sin(side)])
    pts = knots.points @ m.T + shift  # (P, 2), the clumps sit off-centre
    kw = rng.lognormal(0, 0.9, len(pts))
    scene.add_points(
        pts, flux * rng.uniform(0.12, 0.22) * kw / kw.sum(), blue_colour(rng), sigma=rng.uniform(0.6, 1.6) * PX
    )


def _shell_galaxy(scene: Scene, rng: np.random.Generator, flux: float, hlr: float, side: float) -> None:
    """A smooth or disky galaxy, off-centre in its own envelope, with interleaved shells on alternating sides."""
    q = rng.uniform(0.55, 1.0)
    pa = rng.uniform(0, math.pi)
    m = projection(q, pa)
    colour = red_colour(rng) if rng.random() < 0.5 else disk_colour(rng)
    scene.add_profile(transform(sersic(rng.choice([1.0, 2.0, 3.0]), hlr * 0.7), m), colour, flux * 0.5)
    lop = galsim.Exponential(half_light_radius=hlr * 1.6, gsparams=GSP)
    scene.add_profile(
        transform(lop, projection(q * rng.uniform(0.6, 1.0), pa + rng.normal(0, 0.4))),
        colour,
        flux * 0.4,
        at=tuple(hlr * rng.uniform(0.5, 1.0) * np.array([math.cos(side), math.sin(side)])),
    )
    r, th = disk_coords(scene, projection(rng.uniform(0.75, 1.0), pa))
    shells = np.zeros_like(r)
    for k in range(int(rng.integers(1, 4))):
        rk = hlr * (1.3 + 1.1 * k) * rng.uniform(0.9, 1.1)
        dth = np.angle(np.exp(1j * (th - side - math.pi * k + rng.normal(0, 0.3))))  # alternate sides
        arc = np.exp(-0.5 * ((r - rk) / (0.1 * rk)) ** 2) * np.exp(-0.5 * (dth / 0.5) ** 2)
        shells += arc * (r < rk * 1.05) / (1 + k)  # sharp outer edge, fainter further out
    scene.add_map(shells, colour * sed(-0.1, -0.05), flux * 0.1)
