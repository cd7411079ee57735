"""Benchmark D3: prepare a full-size (17,736 x 256 x 256 x 3) Galaxy10-format file to 128 px.

Compares `model.data.prepare` (streamed chunks, resized straight into a .npy on disk) against the naive
way (load the whole `images` array with h5py, then resize it) in the same run, each in its own process so
that peak memory (max RSS) is measured separately. Also measures the synthetic generator's rate.

    python benchmarks/prepare.py            # full size; needs ~4 GB of disk and ~8 GB of memory
    GALAXY_BENCH_N=2000 python benchmarks/prepare.py   # quicker
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N = int(os.environ.get("GALAXY_BENCH_N", 17736))
SIZE = 128


def make_file(path: Path, n: int) -> None:
    """A Galaxy10-format file of tiled synthetic content (any content will do for timing)."""
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, size=(64, 256, 256, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        images = f.create_dataset("images", shape=(n, 256, 256, 3), dtype=np.uint8, chunks=(1, 256, 256, 3))
        for start in range(0, n, 64):
            stop = min(start + 64, n)
            images[start:stop] = tiles[: stop - start]
        f["ans"] = (np.arange(n) % 10).astype(np.uint8)
        f["ra"] = rng.uniform(0, 360, n)
        f["dec"] = rng.uniform(-30, 60, n)
        f["redshift"] = rng.uniform(0.01, 0.3, n).astype(np.float32)
        f["pxscale"] = np.full(n, 0.262, np.float32)


CHILD = r"""
import json, resource, sys, time
import numpy as np
src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if mode == "ours":
    from model.data import prepare
    prepare(src, out, size=128)
else:
    import h5py
    from model.data import resize_images
    with h5py.File(src, "r") as f:
        images = f["images"][:]          # the whole array in memory
        labels = f["ans"][:]
    small = resize_images(images, 128)
    np.save(out + ".npy", small)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(src: Path, out: Path, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(out), mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synth_rate(n: int = 24) -> tuple[float, float]:
    """Images per second of the GalSim generator at 256 px with 1 and 2 worker processes."""
    from model.synth import synthesize

    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            t = time.perf_counter()
            synthesize(n, Path(tmp) / f"s{workers}.h5", size=256, seed=1, workers=workers)
            rates.append(n / (time.perf_counter() - t))
    return rates[0], rates[1]


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("GALAXY_BENCH_TMP")) as tmp:
        src = Path(tmp) / "big.h5"
        t = time.perf_counter()
        make_file(src, N)
        print(f"made {N} x 256 px file ({src.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
        ours = run_child(src, Path(tmp) / "prepared", "ours")
        print(f"ours : {ours['seconds']:.1f} s, peak RSS {ours['max_rss_mb']:.0f} MB")
        naive = run_child(src, Path(tmp) / "naive", "naive")
        print(f"naive: {naive['seconds']:.1f} s, peak RSS {naive['max_rss_mb']:.0f} MB")
    one, two = synth_rate()
    print(f"synthetic generation at 256 px: {one:.1f} img/s with 1 worker, {two:.1f} img/s with 2 workers")
    speed = naive["seconds"] / ours["seconds"]
    memory = naive["max_rss_mb"] / ours["max_rss_mb"]
    print(
        f"prepare: {speed:.2f}x faster and {memory:.1f}x less peak memory than load-all-then-resize "
        f"({N} images 256->128 px: {ours['seconds']:.1f} s / {ours['max_rss_mb']:.0f} MB vs "
        f"{naive['seconds']:.1f} s / {naive['max_rss_mb']:.0f} MB; synth {two:.1f} img/s on 2 workers)"
    )


if __name__ == "__main__":
    main()
