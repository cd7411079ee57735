"""What redshift does to a synthetic galaxy (SPEC D2, P6): its distance, apparent size, brightness and colour.

Each galaxy gets its redshift first, then a physical half-light radius, and its image follows from them:

    z ~ Gamma(k = 3.7, scale = 0.0208), clipped to [0.005, 0.3]
    D_C(z) = (c / H0) ∫_0^z dz' / E(z'),   E(z) = sqrt(Ωm (1 + z)^3 + 1 - Ωm)   flat ΛCDM, H0 = 70, Ωm = 0.3
    D_A = D_C / (1 + z),   D_L = (1 + z) D_C = (1 + z)^2 D_A
    θ = R / D_A                              apparent half-light radius θ (arcsec) of a physical one R (kpc)
    m_r = m_ref + 5 log10(D_L(z) / D_L(z_ref))         flux = L / (4π D_L²)
    K_b = (z - z_ref) s_b(g - r)             per pixel: the band b flux times 10^(-0.4 K_b)

Surface brightness is flux / θ² ∝ D_A² / D_L² = (1 + z)^-4 (Tolman dimming): it comes out of the two
distances and is not applied a second time. The PSF stays fixed in arcsec, so a galaxy further away spans
fewer PSF widths and loses its detail as real ones do.

Where the numbers come from:
- z: a gamma fitted by its mean (0.077) and spread (0.040) to the 118 Galaxy10 DECaLS redshifts shown by the
  Hugging Face viewer of MultimodalUniverse/gz10 (three pages of rows: 5-95 % 0.022-0.142, median 0.074, few
  past 0.15, where the NASA-Sloan Atlas behind Galaxy Zoo DECaLS stops). The gamma has median 0.070, 5-95 %
  0.025-0.152, peaks at 0.056 and keeps a thin tail past 0.2 (1 %), as the full column has some beyond.
- missing redshifts: the viewer marks the real column as having missing values, yet none of the 118 rows read
  was missing: the fraction is small (under 2.5 % at 95 % confidence). REDSHIFT_MISSING = 2 % is stored as
  NaN (the image is still drawn at its z), enough to exercise every NaN path.
- R: per class, log-normal around the radius that gives the class's calibrated apparent size
  (SYNTH_VERSION 2, ``APPARENT_SIZE``) at z_ref = 0.07, with sigma 0.45 in ln R (within the 0.3-0.5 that
  Shen et al. 2003 measure at fixed luminosity in SDSS). Galaxy10 holds only galaxies big and bright enough for
  volunteers to classify, so a galaxy enters the sample only if its apparent size falls in its class's window:
  R is drawn from the log-normal truncated to [lo, hi] x D_A(z). Apparent sizes keep their v2 range; galaxies
  further away are larger and brighter (the sample's Malmquist bias) yet smaller on the sky (Spearman about
  -0.5 between apparent size and z within a class; sigma sets it).
- m_ref: v2's size-brightness relation read at z_ref (``model.synth``), clipped to r = 13.5-18.0 there; the
  distance modulus moves it with z, so a galaxy far out may be fainter than 18.
- K-correction: the linear slopes s_b per unit z of the K-corrections of Chilingarian, Melchior & Zolotukhin
  (2010, MNRAS 405, 1409; their 2012 polynomials for SDSS g from g-z, r from g-r and z from g-z, close to
  DECam's bands, fitted through the origin over 0 < z < 0.25) for blue (g-r 0.4), mixed (0.7) and red (1.0)
  populations, interpolated in each pixel's g-r. The galaxies' colours are observed-frame colours at z_ref, so
  only the difference from z_ref is applied: red light reddens by 1.3 mag in g-r and 0.5 in r-z per unit z,
  blue light by 0.36 and 0.10.

Dimension letters: S image side (pixels), K bands (3: g, r, z).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from model.synth_galaxies import PX

C_KM_S = 299792.458  # speed of light
H0 = 70.0  # km/s/Mpc
OMEGA_M = 0.3  # flat: Omega_Lambda = 1 - OMEGA_M
ARCSEC_PER_RAD = 206264.806
Z_GAMMA = (3.7, 0.0208)  # shape, scale of the redshift distribution
Z_RANGE = (0.005, 0.3)
Z_MAX_RENDER = 0.5  # a galaxy may be rendered at any 0 < z <= this (the K-correction fits go to 0.5)
REDSHIFT_MISSING = 0.02  # fraction of stored redshifts that are NaN, as some are in the real file
Z_REF = 0.07  # the redshift at which v2's calibrated sizes, magnitudes and colours hold
SIZE_SIGMA = 0.45  # ln R spread of each class's physical size distribution
#: Half-light radius window per class in reference (256 px, 0.262 arcsec) pixels, calibrated in v2.
APPARENT_SIZE = {
    0: (7, 18),
    1: (6, 15),
    2: (5, 18),
    3: (5, 15),
    4: (6, 16),
    5: (14, 36),
    6: (13, 32),
    7: (12, 32),
    8: (20, 44),
    9: (12, 30),
}
#: K-correction slopes (mag per unit z) for g, r, z at the g-r colours KCORR_GR (Chilingarian et al. 2010).
KCORR_GR = np.array([0.4, 0.7, 1.0])
KCORR_SLOPES = np.array([[-0.15, 0.45, 1.89], [-0.51, -0.10, 0.56], [-0.61, -0.33, 0.05]])  # (K, 3)


# ---------------------------------------------------------------- cosmology


def comoving_distance(z: float | np.ndarray, steps: int = 256) -> float | np.ndarray:
    """Line-of-sight comoving distance in Mpc (flat ΛCDM), by the trapezoid rule on a fixed grid of `steps`."""
    zz = np.asarray(z, dtype=np.float64)
    t = zz[..., None] * np.linspace(0.0, 1.0, steps + 1)  # (..., steps + 1) from 0 to z
    inv_e = 1.0 / np.sqrt(OMEGA_M * (1 + t) ** 3 + 1 - OMEGA_M)
    d = C_KM_S / H0 * zz * (inv_e[..., 1:] + inv_e[..., :-1]).sum(axis=-1) / (2 * steps)
    return float(d) if d.ndim == 0 else d


def angular_diameter_distance(z: float | np.ndarray) -> float | np.ndarray:
    """D_A = D_C / (1 + z) in Mpc: a length R at z spans R / D_A radians."""
    return comoving_distance(z) / (1 + np.asarray(z))


def luminosity_distance(z: float | np.ndarray) -> float | np.ndarray:
    """D_L = (1 + z) D_C = (1 + z)^2 D_A in Mpc: flux = L / (4π D_L²)."""
    return comoving_distance(z) * (1 + np.asarray(z))


def kpc_per_arcsec(z: float) -> float:
    """Physical kpc spanned by one arcsec at redshift z."""
    return angular_diameter_distance(z) * 1000.0 / ARCSEC_PER_RAD


# ---------------------------------------------------------------- one galaxy's redshift and size


def checked_redshift(z: float) -> float:
    """z as a float, or a ValueError when it lies outside (0, Z_MAX_RENDER] (the K-correction fits stop at 0.5)."""
    if not 0 < z <= Z_MAX_RENDER:
        raise ValueError(f"redshift {z} is not in (0, {Z_MAX_RENDER}]")
    return float(z)


def draw_redshift(rng: np.random.Generator) -> float:
    """A redshift from Galaxy10 DECaLS's distribution (gamma, clipped to Z_RANGE)."""
    return float(np.clip(rng.gamma(*Z_GAMMA), *Z_RANGE))


def median_radius(label: int) -> float:
    """The class's median physical half-light radius in kpc: the centre of its size window seen at Z_REF."""
    lo, hi = APPARENT_SIZE[label]
    return math.sqrt(lo * hi) * PX * kpc_per_arcsec(Z_REF)


def draw_radius(label: int, z: float, u: float) -> float:
    """Physical half-light radius (kpc) at quantile u of the class's log-normal, truncated to the radii whose
    apparent size at z falls in the class's window (the sample's selection)."""
    lo, hi = APPARENT_SIZE[label]
    mu = math.log(median_radius(label))
    scale = PX * kpc_per_arcsec(z)  # kpc per reference pixel at z
    a, b = (0.5 * math.erfc((mu - math.log(x * scale)) / (SIZE_SIGMA * math.sqrt(2))) for x in (lo, hi))  # CDFs
    p = min(max(a + u * (b - a), 1e-300), 1 - 1e-16)
    return math.exp(mu + SIZE_SIGMA * NormalDist().inv_cdf(p))


def apparent_radius(r_kpc: float, z: float) -> float:
    """Apparent half-light radius in arcsec of a physical one (kpc) at redshift z: θ = R / D_A."""
    return r_kpc / kpc_per_arcsec(z)


def distance_dimming(z: float) -> float:
    """Magnitudes added to a galaxy moved from Z_REF to z: 5 log10(D_L(z) / D_L(Z_REF))."""
    return 5 * math.log10(luminosity_distance(z) / luminosity_distance(Z_REF))


def k_correct(bands: np.ndarray, z: float) -> None:
    """Redden (K, S, S) g, r, z light drawn with its colours at Z_REF to how it looks at z, in place.

    Each pixel's band b is scaled by 10^(-0.4 (z - Z_REF) s_b(g - r)) with g - r that pixel's own colour, so
    red bulges redden faster than blue arms; s_b is linear between the KCORR_GR anchors and constant beyond.
    Pixels without light keep a mixed population's slope."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gr = -2.5 * np.log10(bands[0] / bands[1])  # (S, S)
    gr = np.where(np.isfinite(gr), gr, np.float32(KCORR_GR[1]))
    step = KCORR_GR[1] - KCORR_GR[0]  # the anchors are evenly spaced
    w = np.clip((gr - np.float32(KCORR_GR[0])) / np.float32(step), 0, 2)  # (S, S) position along the anchors
    lo, hi = np.minimum(w, 1), np.maximum(w - 1, 0)
    c = -0.4 * math.log(10) * (z - Z_REF)  # ln of the flux factor per magnitude of K
    for k in range(3):
        s0, s1, s2 = KCORR_SLOPES[k]
        bands[k] *= np.exp(np.float32(c * s0) + np.float32(c * (s1 - s0)) * lo + np.float32(c * (s2 - s1)) * hi)
