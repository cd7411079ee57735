"""Benchmark D3: prepare a full-size (17,736 x 256 x 256 x 3) Galaxy10-format file to 128 px.

Compares `model.data.prepare` (streamed: hashed, read, resized and written block by block) against the naive
way (load the whole `images` array with h5py, resize it, save it). The measurement is made fair:

- each run is a fresh child process, so peak memory (max RSS) belongs to one variant alone; imports (numpy,
  h5py, torch) happen before the clock in both, and the RSS of the imports alone is printed for reference;
- the source file is read once before any run, so that no variant pays for the first read from disk;
- the variants alternate (S, L, S, L, S, L) so that a slow spell of a shared machine hits both; each
  streamed run writes a new folder (no cache hit);
- time and memory are reported separately, as the median of 3 runs of each (times) and the largest peak;
- the last streamed and load-all outputs are compared pixel for pixel.

    python benchmarks/prepare.py                        # full size; ~4.5 GB of disk and ~6 GB of memory
    GALAXY_BENCH_N=2000 python benchmarks/prepare.py    # quicker
    GALAXY_BENCH_TMP=/big/disk python benchmarks/prepare.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
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
REPEATS = 3


def make_file(path: Path, n: int) -> None:
    """A Galaxy10-format file of tiled random content, one HDF5 chunk per image, uncompressed."""
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


def warm(path: Path) -> None:
    """Read the file once so that every run finds it in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        while fh.read(64 << 20):
            pass


CHILD = r"""
import json, resource, sys, time
import h5py
import numpy as np
from model.data import prepare, resize_images  # imports torch; outside the clock for both variants
src, out, mode, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = time.perf_counter()
if mode == "streamed":
    prepare(src, out, size=size)
elif mode == "load-all":
    with h5py.File(src, "r") as f:
        images = f["images"][:]  # (N, S, S, 3): the whole array in memory
        labels = f["ans"][:]
    small = resize_images(images, size)  # (N, size, size, 3)
    np.save(out + ".images.npy", small)
    np.save(out + ".labels.npy", labels)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(src: Path, out: Path, mode: str) -> dict:
    """Run one variant ('streamed', 'load-all' or 'imports') in a fresh process; its seconds and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(out), mode, str(SIZE)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"prepare benchmark: the {mode} run failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_images(a: Path, b: Path, block: int = 1024) -> bool:
    """Whether two (N, S, S, 3) .npy files hold the same pixels, compared block by block."""
    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    if x.shape != y.shape:
        return False
    return all(np.array_equal(x[i : i + block], y[i : i + block]) for i in range(0, len(x), block))


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("GALAXY_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        src = tmp / "big.h5"
        t = time.perf_counter()
        make_file(src, N)
        print(f"made {N} x 256 px file ({src.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
        warm(src)
        imports = run_child(src, tmp / "none", "imports")
        print(f"imports alone (python, numpy, h5py, torch): peak RSS {imports['peak_rss_mb']:.0f} MB")
        runs: dict[str, list[dict]] = {"streamed": [], "load-all": []}
        streamed_out = loadall_out = None
        for i in range(REPEATS):
            for mode in ("streamed", "load-all"):
                out = tmp / f"{mode}-{i}"
                result = run_child(src, out, mode)
                runs[mode].append(result)
                print(f"run {i + 1} {mode:<8}: {result['seconds']:6.1f} s, peak RSS {result['peak_rss_mb']:6.0f} MB")
                if mode == "streamed":
                    if streamed_out is not None:
                        shutil.rmtree(streamed_out)
                    streamed_out = out
                else:
                    if loadall_out is not None:
                        for p in tmp.glob(f"{loadall_out.name}.*.npy"):
                            p.unlink()
                    loadall_out = out
        identical = same_images(streamed_out / "images.npy", Path(f"{loadall_out}.images.npy"))

    time_s = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    peak_mb = {m: max(r["peak_rss_mb"] for r in rs) for m, rs in runs.items()}
    for m in runs:
        each = ", ".join(f"{r['seconds']:.1f}" for r in runs[m])
        print(f"time   {m:<8}: median {time_s[m]:.1f} s of {each}")
    for m in runs:
        each = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in runs[m])
        print(f"memory {m:<8}: peak {peak_mb[m]:.0f} MB of {each}")
    print(f"same pixels from both variants: {'yes' if identical else 'NO'}")
    speed = time_s["load-all"] / time_s["streamed"]
    memory = peak_mb["load-all"] / peak_mb["streamed"]
    print(
        f"prepare: {speed:.2f}x the speed and {memory:.1f}x less peak memory than load-all-then-resize "
        f"({N} images 256->128 px, median of {REPEATS} alternated runs: streamed {time_s['streamed']:.1f} s / "
        f"{peak_mb['streamed']:.0f} MB vs load-all {time_s['load-all']:.1f} s / {peak_mb['load-all']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
