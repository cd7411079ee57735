"""Galaxy10 DECaLS data: validate and stream the HDF5 file, download it, prepare a compact training set.

A prepared dataset is a folder::

    images.npy    (N, S, S, 3) uint8, resized with an anti-aliased filter
    labels.npy    (N,) uint8 class ids 0-9
    redshift.npy  (N,) float32
    split.npy     (N,) uint8: 0 train, 1 validation, 2 test (stratified by class)
    meta.json     source, its SHA256, the cache key, sizes, counts per class and split

Dimension letters: N images, S side in pixels after preparation, C = 3 colour channels.
Everything a user can get wrong raises ``UserError`` naming the file and the problem; every output is
written under a temporary name and renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from model.errors import UserError
from model.galaxy10 import (
    CLASS_NAMES,
    FILE_NAME,
    FILE_SHA256,
    IMAGE_KEY,
    LABEL_KEY,
    NUM_CLASSES,
    SCALAR_KEYS,
)

PREPARE_VERSION = 1  # bump when the prepared format or the resizing changes
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
CHUNK = 256  # images per block of `iter_chunks` (about 50 MB at 256 px)
READ_BYTES = 32 << 20  # `prepare` reads about this much at a time, rounded to whole HDF5 chunks
READ_AHEAD = 2  # blocks `prepare` reads ahead of the one being resized
HASH_BYTES = 16 << 20  # block size of the SHA256 reads

Progress = Callable[[int], None]


# --------------------------------------------------------------------------------------------------
# Reading and validating a Galaxy10-format file


@dataclass(frozen=True)
class Galaxy10File:
    """A validated Galaxy10-format HDF5 file: its path, image count and image side."""

    path: Path
    n: int
    side: int
    synthetic: bool


def _open_h5(path: Path):
    import h5py

    if not path.exists():
        raise UserError(path, "no such file")
    if path.is_dir():
        raise UserError(path, "is a folder, expected a Galaxy10 .h5 file")
    if not os.access(path, os.R_OK):
        raise UserError(path, "not readable (permission denied)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise UserError(path, f"not a readable HDF5 file (truncated or corrupt?): {_short(err)}") from None


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:160] if str(err) else type(err).__name__


def validate_h5(path: str | Path) -> Galaxy10File:
    """Check keys, shapes, dtypes and label range of a Galaxy10-format file; raise UserError if wrong."""
    path = Path(path)
    with _open_h5(path) as f:
        missing = [k for k in (IMAGE_KEY, LABEL_KEY, *SCALAR_KEYS) if k not in f]
        if missing:
            raise UserError(path, f"missing key(s) {', '.join(missing)} (expected images, ans, ra, dec, redshift, pxscale)")
        images = f[IMAGE_KEY]
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise UserError(path, f"'images' has shape {images.shape}, expected (N, S, S, 3)")
        if images.dtype != np.uint8:
            raise UserError(path, f"'images' has dtype {images.dtype}, expected uint8")
        n = images.shape[0]
        if n == 0:
            raise UserError(path, "'images' is empty")
        for key in (LABEL_KEY, *SCALAR_KEYS):
            ds = f[key]
            if ds.shape != (n,):
                raise UserError(path, f"'{key}' has shape {ds.shape}, expected ({n},) to match 'images'")
            if ds.dtype.kind not in "iuf":
                raise UserError(path, f"'{key}' has dtype {ds.dtype}, expected a number")
        try:
            labels = f[LABEL_KEY][:]
        except OSError as err:
            raise UserError(path, f"cannot read 'ans' (truncated or corrupt?): {_short(err)}") from None
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise UserError(path, "'ans' holds non-integer labels")
        bad = (labels < 0) | (labels >= NUM_CLASSES)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise UserError(path, f"label {labels[first]} at index {first} is outside 0-{NUM_CLASSES - 1}")
        synthetic = bool(f.attrs.get("synthetic", False))
        return Galaxy10File(path=path, n=int(n), side=int(images.shape[1]), synthetic=synthetic)


def iter_chunks(
    source: Galaxy10File, chunk: int = CHUNK
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (start, images (n, S, S, 3) uint8, labels (n,), redshift (n,)) without loading the whole file."""
    with _open_h5(source.path) as f:
        images, labels, redshift = f[IMAGE_KEY], f[LABEL_KEY], f["redshift"]
        for start in range(0, source.n, chunk):
            stop = min(start + chunk, source.n)
            try:
                yield start, images[start:stop], labels[start:stop], redshift[start:stop]
            except OSError as err:
                raise UserError(
                    source.path, f"cannot read images {start}-{stop} (truncated or corrupt?): {_short(err)}"
                ) from None


def _block_rows(chunks: tuple[int, ...] | None, image_bytes: int, target: int = READ_BYTES) -> int:
    """Images per read block: about ``target`` bytes, rounded down to whole HDF5 chunks (at least one).

    Whole chunks, because HDF5 inflates a compressed chunk in full for any part of it that is read.
    """
    per_chunk = chunks[0] if chunks else 1
    return per_chunk * max(1, target // (per_chunk * image_bytes))


def _read_ahead(source: Galaxy10File, rows: int, depth: int = READ_AHEAD) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, images (n, S, S, 3) uint8) blocks of ``rows`` images, read by a thread ``depth`` blocks ahead.

    Blocks are read into ``depth + 1`` reused buffers: a yielded array is overwritten once the next one is
    asked for, and memory stays at ``depth + 1`` blocks whatever the file's size. Closing the generator (or
    an error on either side) stops the thread.
    """
    free: queue.Queue[np.ndarray | None] = queue.Queue()
    full: queue.Queue[tuple[int, int, np.ndarray] | BaseException | None] = queue.Queue()
    for _ in range(depth + 1):
        free.put(np.empty((rows, source.side, source.side, 3), np.uint8))
    closed = threading.Event()

    def read() -> None:
        try:
            with _open_h5(source.path) as f:
                images = f[IMAGE_KEY]
                for start in range(0, source.n, rows):
                    stop = min(start + rows, source.n)
                    buffer = free.get()
                    if buffer is None or closed.is_set():  # the consumer has gone
                        return
                    try:
                        images.read_direct(buffer, np.s_[start:stop], np.s_[0 : stop - start])
                    except OSError as err:
                        raise UserError(
                            source.path, f"cannot read images {start}-{stop} (truncated or corrupt?): {_short(err)}"
                        ) from None
                    full.put((start, stop - start, buffer))
            full.put(None)
        except BaseException as err:  # handed to the consumer
            full.put(err)

    thread = threading.Thread(target=read, name="prepare-read", daemon=True)
    thread.start()
    try:
        while (item := full.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            start, n, buffer = item
            yield start, buffer[:n]
            free.put(buffer)
    finally:
        closed.set()
        free.put(None)
        thread.join()


def sha256_file(path: str | Path, progress: Progress | None = None) -> str:
    """Hex SHA256 of a file, read in 16 MiB blocks."""
    return _sha256(Path(path), progress)


def _sha256(path: Path, progress: Progress | None = None, stop: threading.Event | None = None) -> str | None:
    """SHA256 of a file read into one reused buffer; None if ``stop`` is set before the end."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            if stop is not None and stop.is_set():
                return None
            digest.update(view[:n])  # hashlib releases the GIL on large updates
            if progress:
                progress(n)
    return digest.hexdigest()


class _BackgroundSha256:
    """SHA256 of a file computed in a thread, so that hashing overlaps reading and resizing."""

    def __init__(self, path: Path) -> None:
        self.stop = threading.Event()
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="prepare-sha256", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._digest = _sha256(path, stop=self.stop)
        except BaseException as err:  # handed to the caller of result()
            self._error = err

    def result(self) -> str:
        """The hex digest, once the thread has finished; re-raises its error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._digest is not None
        return self._digest

    def cancel(self) -> None:
        self.stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------------
# Finding and downloading the real file


def astronn_cache_dir() -> Path:
    """astroNN's dataset cache folder (``~/.astroNN/datasets``)."""
    return Path.home() / ".astroNN" / "datasets"


def find_galaxy10(path: str | Path | None = None) -> Path | None:
    """The Galaxy10 file at an explicit path, else in astroNN's cache, else None."""
    if path is not None:
        return Path(path)
    candidate = astronn_cache_dir() / FILE_NAME
    return candidate if candidate.exists() else None


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = FILE_SHA256,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.partial`` if present; verify SHA256; rename at the end.

    ``progress(bytes_so_far, total_or_None)`` is called as data arrives. On a checksum mismatch the
    partial file is deleted and UserError raised; ``dest`` itself only ever holds a verified file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise UserError(url, f"download failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise UserError(url, f"download failed: {_short(getattr(err, 'reason', err))}") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(partial, "ab" if resumed else "wb") as fh:
                while block := response.read(1 << 20):
                    fh.write(block)
                    have += len(block)
                    if progress:
                        progress(have, total)
    if sha256 is not None:
        got = sha256_file(partial)
        if got.lower() != sha256.lower():
            partial.unlink(missing_ok=True)
            raise UserError(dest, f"checksum mismatch: SHA256 {got[:16]}..., expected {sha256.lower()[:16]}...")
    os.replace(partial, dest)
    return dest


def astronn_file() -> Path:
    """The Galaxy10 file in astroNN's cache; when it is not there yet, astroNN's own loader downloads it."""
    cached = find_galaxy10()
    if cached is not None:  # already fetched (by astroNN or `galaxy data download`): no astroNN needed
        return cached
    try:
        from astroNN.datasets import load_galaxy10  # type: ignore[import-not-found]
    except Exception as err:  # astroNN needs TensorFlow; any import failure means "not usable here"
        raise UserError("astronn", f"astroNN is not usable here ({_short(err)}); install galaxy-vqvae[astronn]") from None
    load_galaxy10()  # downloads into the cache; the arrays it returns are dropped at once
    path = astronn_cache_dir() / FILE_NAME
    if not path.exists():
        raise UserError(path, "astroNN's loader did not leave the file in its cache")
    return path


# --------------------------------------------------------------------------------------------------
# Preparing


def stratified_split(labels: np.ndarray, seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Assign each image to train (0), val (1) or test (2), keeping class proportions in every split."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.uint8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        split[idx[n_train : n_train + n_val]] = 1
        split[idx[n_train + n_val :]] = 2
    return split


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(n, S, S, 3) uint8 -> (n, size, size, 3) uint8 with an anti-aliased bilinear filter."""
    if images.shape[1] == size:
        return np.ascontiguousarray(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (n, 3, S, S) channels_last view
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.permute(0, 2, 3, 1).contiguous().numpy()  # (n, size, size, 3)


class _NpyWriter:
    """Stream rows into a .npy file of known final shape without holding the array in memory."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.fh = open(path, "wb")
        np.lib.format.write_array_header_1_0(
            self.fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        )
        self.dtype = np.dtype(dtype)

    def write(self, rows: np.ndarray) -> None:
        self.fh.write(memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B"))  # no copy

    def close(self) -> None:
        self.fh.close()


def cache_key(source_sha256: str, size: int, seed: int, fractions: tuple[float, float, float]) -> str:
    """Identity of a prepared dataset: the source content plus every preparation setting."""
    text = json.dumps(
        {"source": source_sha256, "size": size, "seed": seed, "fractions": list(fractions), "version": PREPARE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_meta(out: str | Path) -> dict | None:
    """The meta.json of a prepared folder, or None if there is none (or it is unreadable)."""
    path = Path(out) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class PrepareResult:
    """Where a prepared dataset lies, its cache key, and whether this call built it or found it."""

    out: Path
    key: str
    cached: bool
    meta: dict


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 128,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    progress: Progress | None = None,
    source_label: str | None = None,
) -> PrepareResult:
    """Resize a Galaxy10-format file to ``size`` px, split it, and store it in ``out`` (cached by content hash).

    The source's SHA256 (the cache key) is computed in a thread while the images are read (in blocks of
    whole HDF5 chunks, by a second thread) and resized; memory holds a few blocks, never the whole array.
    """
    if not 8 <= size <= 1024:
        raise UserError(None, f"--size {size} is outside 8-1024")
    src = validate_h5(source)
    if size > src.side:
        raise UserError(src.path, f"images are {src.side} px, smaller than the requested --size {size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(out, "exists and is not a folder")
    previous = read_meta(out)
    st = src.path.stat()

    def cached(key: str) -> bool:
        return previous is not None and previous.get("key") == key and all((out / f).exists() for f in _FILES)

    # An unchanged source (same size and mtime as last time) keeps its hash; otherwise hash it while working.
    digest = None
    if previous and previous.get("source_stat") == [st.st_size, st.st_mtime_ns] and previous.get("source_sha256"):
        digest = previous["source_sha256"]
        if cached(key := cache_key(digest, size, seed, fractions)):
            return PrepareResult(out=out, key=key, cached=True, meta=previous)
    hasher = _BackgroundSha256(src.path) if digest is None else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        labels, redshift = _read_scalars(src)
        writer = _NpyWriter(tmp / "images.npy", (src.n, size, size, 3), np.uint8)
        blocks = _read_ahead(src, _block_rows(_chunks(src), src.side * src.side * 3, READ_BYTES))
        try:
            for _, images in blocks:
                writer.write(resize_images(images, size))
                if progress:
                    progress(len(images))
        finally:
            blocks.close()
            writer.close()
        if hasher is not None:
            digest = hasher.result()
            key = cache_key(digest, size, seed, fractions)
            if cached(key):  # same content under a new mtime: the folder already holds this dataset
                shutil.rmtree(tmp, ignore_errors=True)
                return PrepareResult(out=out, key=key, cached=True, meta=previous)
        split = stratified_split(labels, seed, fractions)
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "redshift.npy", redshift)
        np.save(tmp / "split.npy", split)
        meta = {
            "key": key,
            "version": PREPARE_VERSION,
            "source": source_label or str(src.path),
            "source_path": str(src.path.resolve()),
            "source_sha256": digest,
            "source_stat": [st.st_size, st.st_mtime_ns],
            "synthetic": src.synthetic,
            "n": src.n,
            "size": size,
            "source_size": src.side,
            "seed": seed,
            "fractions": list(fractions),
            "class_names": list(CLASS_NAMES),
            "counts": _counts(labels, split),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        _replace_dir(tmp, out)
    except BaseException:
        if hasher is not None:
            hasher.cancel()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out=out, key=key, cached=False, meta=meta)


def _chunks(src: Galaxy10File) -> tuple[int, ...] | None:
    """The HDF5 chunk shape of the images (None when stored contiguously)."""
    with _open_h5(src.path) as f:
        return f[IMAGE_KEY].chunks


def _read_scalars(src: Galaxy10File) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) uint8, redshift (N,) float32) of a validated file, read whole (they are small)."""
    with _open_h5(src.path) as f:
        try:
            return f[LABEL_KEY][:].astype(np.uint8), f["redshift"][:].astype(np.float32)
        except OSError as err:
            problem = f"cannot read 'ans' or 'redshift' (truncated or corrupt?): {_short(err)}"
            raise UserError(src.path, problem) from None


_FILES = ("images.npy", "labels.npy", "redshift.npy", "split.npy", "meta.json")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished folder into place, replacing an older one only after the new one is complete."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _counts(labels: np.ndarray, split: np.ndarray) -> dict[str, list[int]]:
    return {
        name: np.bincount(labels[split == i], minlength=NUM_CLASSES).astype(int).tolist()
        for i, name in enumerate(SPLITS)
    }


# --------------------------------------------------------------------------------------------------
# Loading a prepared dataset


@dataclass
class PreparedData:
    """A prepared dataset; images are memory-mapped, the rest is small."""

    root: Path
    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    labels: np.ndarray  # (N,) uint8
    redshift: np.ndarray  # (N,) float32
    split: np.ndarray  # (N,) uint8
    meta: dict

    def indices(self, name: str) -> np.ndarray:
        """Row numbers of one split ('train', 'val' or 'test')."""
        return np.flatnonzero(self.split == SPLITS.index(name))

    def subset(self, name: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (n, S, S, 3) uint8 in memory, labels (n,) int64) of one split, optionally the first ``limit``."""
        idx = self.indices(name)[:limit]
        return np.asarray(self.images[idx]), self.labels[idx].astype(np.int64)

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def synthetic(self) -> bool:
        return bool(self.meta.get("synthetic", False))


def load_prepared(root: str | Path) -> PreparedData:
    """Open a prepared folder (made by ``prepare``), checking it is complete and consistent."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(root, "no such prepared dataset folder (run `galaxy data prepare` first)")
    meta = read_meta(root)
    if meta is None:
        raise UserError(root / "meta.json", "missing or unreadable: not a prepared dataset")
    arrays = {}
    for name in ("images", "labels", "redshift", "split"):
        path = root / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r" if name == "images" else None)
        except (OSError, ValueError) as err:
            raise UserError(path, f"cannot be read: {_short(err)}") from None
    n = len(arrays["labels"])
    if arrays["images"].shape != (n, meta["size"], meta["size"], 3) or any(len(arrays[k]) != n for k in ("redshift", "split")):
        raise UserError(root, "arrays disagree in length or shape: re-run `galaxy data prepare`")
    return PreparedData(root=root, meta=meta, **arrays)


def describe(data: PreparedData) -> str:
    """A table of image counts per class and split, for `galaxy data info`."""
    counts = data.meta["counts"]
    width = max(len(c) for c in CLASS_NAMES)
    lines = [
        f"{data.root}: {data.meta['n']} images, {data.meta['size']} px, "
        f"{'synthetic' if data.synthetic else 'real'} source {data.meta['source']} (sha256 {data.meta['source_sha256'][:12]}), key {data.key}",
        f"{'class':<{width + 4}}" + "".join(f"{s:>8}" for s in SPLITS) + f"{'total':>8}",
    ]
    for c, name in enumerate(CLASS_NAMES):
        row = [counts[s][c] for s in SPLITS]
        lines.append(f"{c:>2}  {name:<{width}}" + "".join(f"{v:>8}" for v in row) + f"{sum(row):>8}")
    totals = [sum(counts[s]) for s in SPLITS]
    lines.append(f"{'':<{width + 4}}" + "".join(f"{v:>8}" for v in totals) + f"{sum(totals):>8}")
    return "\n".join(lines)
