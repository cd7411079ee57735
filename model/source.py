"""The Galaxy10 source file (SPEC D1): find it, download it, validate it, read it in chunks, hash it.

The official file is ``Galaxy10_DECals.h5`` (see ``model.galaxy10``); a file in the same schema (the synthetic
set, or the small files tests make) is read the same way, never the whole image array at once. Everything a
user can get wrong raises ``UserError`` naming the file and the problem.

Dimension letters: N images, S side in pixels, C = 3 colour channels.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import h5py
import numpy as np

from model.errors import UserError
from model.galaxy10 import FILE_NAME, FILE_SHA256, IMAGE_KEY, LABEL_KEY, NUM_CLASSES, SCALAR_KEYS

READ_BYTES = 32 << 20  # `read_blocks` reads about this much at a time, rounded to whole HDF5 chunks
READ_AHEAD = 2  # blocks read ahead of the one being used
HASH_BYTES = 16 << 20  # block size of the hash reads (BLAKE3 for the cache key, SHA256 for the download)

Progress = Callable[[int], None]


# --------------------------------------------------------------------------------------------------
# Reading and validating a Galaxy10-format file


@dataclass(frozen=True)
class Galaxy10File:
    """A validated Galaxy10-format HDF5 file: its path, image count and image side, and whether it has labels."""

    path: Path
    n: int
    side: int
    synthetic: bool
    labelled: bool = True


def parse_source(source: str) -> tuple[str, Path | None]:
    """``synthetic``, ``h5:PATH`` or ``astronn`` -> (kind, the path for h5 else None); a UserError otherwise."""
    if source in ("synthetic", "astronn"):
        return source, None
    if source.startswith("h5:"):
        if not source[3:]:
            raise UserError("source", "h5: needs a path, e.g. h5:~/data/Galaxy10_DECals.h5")
        return "h5", Path(source[3:]).expanduser()
    raise UserError("source", f"{source!r}: expected synthetic, h5:PATH or astronn")


def open_h5(path: Path):

    if not path.exists():
        raise UserError(path, "no such file")
    if path.is_dir():
        raise UserError(path, "is a folder, expected a Galaxy10 .h5 file")
    if not os.access(path, os.R_OK):
        raise UserError(path, "not readable (permission denied)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise UserError(path, f"not a readable HDF5 file (truncated or corrupt?): {short_error(err)}") from None


def short_error(err: BaseException) -> str:
    return str(err).splitlines()[0][:160] if str(err) else type(err).__name__


def validate_h5(path: str | Path, *, require_labels: bool = True) -> Galaxy10File:
    """Check keys, shapes, dtypes and label range of a Galaxy10-format file; raise UserError if wrong.

    With ``require_labels=False`` a file without 'ans' passes (``labelled`` False); one with 'ans' is checked.
    """
    path = Path(path)
    with open_h5(path) as f:
        labelled = LABEL_KEY in f or require_labels
        label_keys = (LABEL_KEY,) if labelled else ()
        missing = [k for k in (IMAGE_KEY, *label_keys, *SCALAR_KEYS) if k not in f]
        if missing:
            raise UserError(
                path, f"missing key(s) {', '.join(missing)} (expected images, ans, ra, dec, redshift, pxscale)"
            )
        images = f[IMAGE_KEY]
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise UserError(path, f"'images' has shape {images.shape}, expected (N, S, S, 3)")
        if images.dtype != np.uint8:
            raise UserError(path, f"'images' has dtype {images.dtype}, expected uint8")
        n = images.shape[0]
        if n == 0:
            raise UserError(path, "'images' is empty")
        for key in (*label_keys, *SCALAR_KEYS):
            ds = f[key]
            if ds.shape != (n,):
                raise UserError(path, f"'{key}' has shape {ds.shape}, expected ({n},) to match 'images'")
            if ds.dtype.kind not in "iuf":
                raise UserError(path, f"'{key}' has dtype {ds.dtype}, expected a number")
        if labelled:
            _check_labels(path, f)
        synthetic = bool(f.attrs.get("synthetic", False))
        return Galaxy10File(path=path, n=int(n), side=int(images.shape[1]), synthetic=synthetic, labelled=labelled)


def _check_labels(path: Path, f) -> None:
    """Every 'ans' value is a whole number in 0 to NUM_CLASSES - 1."""
    try:
        labels = f[LABEL_KEY][:]
    except OSError as err:
        raise UserError(path, f"cannot read 'ans' (truncated or corrupt?): {short_error(err)}") from None
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise UserError(path, "'ans' holds non-integer labels")
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UserError(path, f"label {labels[first]} at index {first} is outside 0-{NUM_CLASSES - 1}")


def block_rows(chunks: tuple[int, ...] | None, image_bytes: int, target: int = READ_BYTES) -> int:
    """Images per read block: about ``target`` bytes, rounded down to whole HDF5 chunks (at least one).

    Whole chunks, because HDF5 inflates a compressed chunk in full for any part of it that is read.
    """
    per_chunk = chunks[0] if chunks else 1
    return per_chunk * max(1, target // (per_chunk * image_bytes))


def read_ahead(source: Galaxy10File, rows: int, depth: int = READ_AHEAD) -> Iterator[tuple[int, np.ndarray]]:
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
            with open_h5(source.path) as f:
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
                            source.path,
                            f"cannot read images {start}-{stop} (truncated or corrupt?): {short_error(err)}",
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
    """Hex SHA256 of a file, read in 16 MiB blocks: the official file's published checksum is a SHA256."""
    return _digest(Path(path), hashlib.sha256(), progress)


def blake3_file(path: str | Path, progress: Progress | None = None) -> str:
    """Hex BLAKE3 of a file, read in 16 MiB blocks: the content hash of prepare's cache key.

    BLAKE3 rather than SHA256 because it is several times faster on CPUs without SHA instructions (3.5 GB:
    2.1 CPU-s with the reads, against 11-15 for SHA256), so hashing no longer bounds the time of ``prepare``.
    """
    return _digest(Path(path), blake3.blake3(), progress)


def _digest(path: Path, digest, progress: Progress | None = None, stop: threading.Event | None = None) -> str | None:
    """Feed a file to ``digest`` (a hashlib-style object) through one reused buffer; None if ``stop`` is set."""
    buffer = bytearray(HASH_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            if stop is not None and stop.is_set():
                return None
            digest.update(view[:n])  # hashlib and blake3 release the GIL on large updates
            if progress:
                progress(n)
    return digest.hexdigest()


class BackgroundBlake3:
    """BLAKE3 of a file computed in a thread, so that hashing overlaps reading and resizing."""

    def __init__(self, path: Path) -> None:
        self.stop = threading.Event()
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="prepare-blake3", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._digest = _digest(path, blake3.blake3(), stop=self.stop)
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
        raise UserError(url, f"download failed: {short_error(getattr(err, 'reason', err))}") from None
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
        raise UserError(
            "astronn", f"astroNN is not usable here ({short_error(err)}); install galaxy-vqvae[astronn]"
        ) from None
    load_galaxy10()  # downloads into the cache; the arrays it returns are dropped at once
    path = astronn_cache_dir() / FILE_NAME
    if not path.exists():
        raise UserError(path, "astroNN's loader did not leave the file in its cache")
    return path
