"""Benchmark D3: prepare a full-size (17,736 x 256 x 256 x 3) Galaxy10-format file to 128 px.

Compares `model.data.prepare` (streamed: hashed, read, resized and written block by block) against the naive
way (load the whole `images` array with h5py, resize it, save it). The measurement is made fair:

- each run is a fresh child process, so peak memory (VmHWM) belongs to one variant alone; imports (numpy,
  h5py, torch) happen before the clock in both, and the RSS of the imports alone is printed for reference;
- the source file is read once before any run, so that no variant pays for the first read from disk;
- the variants alternate (S, L, H, K, S, L, H, K, ...) so that a slow spell of a shared machine hits both; each
  streamed run writes a new folder (no cache hit);
- time and memory are reported separately, as the median of 3 runs of each (times) and the largest peak;
- the last streamed and load-all outputs are compared pixel for pixel;
- two more modes explain the streamed time: H, the BLAKE3 of the source alone (`prepare` needs it for its
  cache key, load-all has none; it runs beside the rest, so it is the floor of the streamed time), and K,
  `prepare` with that hash already known (a folder that held the source at another size).

    python benchmarks/prepare.py                        # full size: ~6 GB of disk, ~5 GB of memory, ~4 min
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
from model.data import prepare, resize_images  # imports torch; outside the clock
from model.source import blake3_file
src, out, mode, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t, c = time.perf_counter(), cpu()
if mode in ("streamed", "known-hash"):
    prepare(src, out, size=size)
elif mode == "load-all":
    with h5py.File(src, "r") as f:
        images = f["images"][:]  # (N, S, S, 3): the whole array in memory
        labels = f["ans"][:]
    small = resize_images(images, size)  # (N, size, size, 3)
    np.save(out + ".images.npy", small)
    np.save(out + ".labels.npy", labels)
elif mode == "blake3":
    blake3_file(src)
seconds, cpu_s = time.perf_counter() - t, cpu() - c
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork, VmHWM starts afresh at exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "peak_rss_mb": peak}))
"""

MODES = {
    "streamed": "model.data.prepare, first time (BLAKE3 of the source for the cache key, read, resize, write)",
    "load-all": "h5py reads the whole images array, resize_images, np.save",
    "blake3": "model.source.blake3_file alone: the floor of the streamed time (prepare hashes beside the work)",
    "known-hash": "prepare into a folder that held this source at another size (hash reused, not recomputed)",
}


def run_child(src: Path, out: Path, mode: str) -> dict:
    """Run one mode (or 'imports': nothing) in a fresh process: its seconds, CPU seconds and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(out), mode, str(SIZE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
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


def seed_known_hash(streamed: Path, out: Path) -> None:
    """Make ``out`` look like a folder that holds this source prepared at another size (its meta only)."""
    meta = json.loads((streamed / "meta.json").read_text())
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({**meta, "key": "another-size"}))


def main() -> None:
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(dir=os.environ.get("GALAXY_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        src = tmp / "big.h5"
        t = time.perf_counter()
        make_file(src, N)
        print(f"made {N} x 256 px file ({src.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
        warm(src)
        for mode, what in MODES.items():
            print(f"  {mode:<10} {what}")
        imports = run_child(src, tmp, "imports")
        print(f"imports alone (python, numpy, h5py, torch): peak RSS {imports['peak_rss_mb']:.0f} MB")
        identical = []
        for i in range(REPEATS):
            outs = {mode: tmp / f"{mode}-{i}" for mode in MODES}
            for mode in MODES:  # alternated: S, L, H, K, S, L, H, K, ...
                if mode == "known-hash":
                    seed_known_hash(outs["streamed"], outs[mode])
                r = run_child(src, outs[mode], mode)
                runs[mode].append(r)
                print(
                    f"run {i + 1} {mode:<10}: {r['seconds']:6.1f} s ({r['cpu_s']:5.1f} CPU-s), "
                    f"peak RSS {r['peak_rss_mb']:5.0f} MB"
                )
            loadall = Path(f"{outs['load-all']}.images.npy")
            identical += [same_images(outs[m] / "images.npy", loadall) for m in ("streamed", "known-hash")]
            shutil.rmtree(outs["streamed"])
            shutil.rmtree(outs["known-hash"])
            for path in tmp.glob(f"{outs['load-all'].name}.*.npy"):
                path.unlink()

    time_s = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    cpu_s = {m: statistics.median(r["cpu_s"] for r in rs) for m, rs in runs.items()}
    peak_mb = {m: max(r["peak_rss_mb"] for r in rs) for m, rs in runs.items()}
    for m in MODES:
        each = ", ".join(f"{r['seconds']:.1f}" for r in runs[m])
        print(f"time   {m:<10}: median {time_s[m]:5.1f} s of {each}; median CPU {cpu_s[m]:.1f} CPU-s")
    for m in MODES:
        each = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in runs[m])
        print(f"memory {m:<10}: peak {peak_mb[m]:5.0f} MB of {each}")
    print(f"same pixels as load-all (streamed and known-hash, every repeat): {'yes' if all(identical) else 'NO'}")
    speed = time_s["load-all"] / time_s["streamed"]
    memory = peak_mb["load-all"] / peak_mb["streamed"]
    print(
        f"prepare: {speed:.2f}x the speed of load-all-then-resize with {memory:.1f}x less peak memory "
        f"({N} images 256->128 px, median of {REPEATS} alternated runs: streamed {time_s['streamed']:.1f} s / "
        f"{peak_mb['streamed']:.0f} MB vs load-all {time_s['load-all']:.1f} s / {peak_mb['load-all']:.0f} MB; "
        f"BLAKE3 alone {time_s['blake3']:.1f} s; with the hash known {time_s['known-hash']:.1f} s, "
        f"{time_s['load-all'] / time_s['known-hash']:.2f}x)"
    )


if __name__ == "__main__":
    main()
