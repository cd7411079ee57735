"""Benchmark the synthetic Galaxy10 generator: images per second at 256 px, 2 worker processes against 1.

Run with no arguments; the last line reads `synth: <ratio>x ...`. Both runs write the same file (checked).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.galaxy10 import NUM_CLASSES  # noqa: E402
from model.synth import image_rng, render_galaxy, synthesize  # noqa: E402

N, SIZE, SEED = 60, 256, 0


def timed(n: int, out: Path, workers: int, repeats: int = 2) -> float:
    """Best of `repeats` wall-clock seconds to synthesize n images with the given worker count (pool start included)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        synthesize(n, out, size=SIZE, seed=SEED, workers=workers)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    for label in range(NUM_CLASSES):  # warm GalSim's profile caches (inherited by forked workers)
        render_galaxy(label, image_rng(SEED, 10**6 + label), SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "w1.h5", Path(tmp) / "w2.h5"
        t1 = timed(N, one, 1)
        t2 = timed(N, two, 2)
        with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
            same = np.array_equal(a["images"][()], b["images"][()])
        mb = one.stat().st_size / 2**20
    r1, r2 = N / t1, N / t2
    print(f"1 worker : {t1:6.2f} s  {r1:6.1f} images/s")
    print(f"2 workers: {t2:6.2f} s  {r2:6.1f} images/s  (identical bytes: {same})")
    print(f"file: {mb:.1f} MiB for {N} images; cpu count {os.cpu_count()}")
    print(
        f"synth: {r2 / r1:.2f}x 2 workers vs 1 at {SIZE} px ({N} images): {r2:.1f} vs {r1:.1f} images/s, "
        f"identical output {same}"
    )


if __name__ == "__main__":
    main()
