"""Loader, download, prepare and caching, and every bad-input case of SPEC D4."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
from pathlib import Path

import blake3
import h5py
import numpy as np
import pytest

from model import data as D
from model import source as S
from model.errors import UserError
from tests.conftest import make_galaxy10


def test_validate_accepts_official_schema(g10):
    info = S.validate_h5(g10)
    assert (info.n, info.side, info.synthetic) == (40, 64, False)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"ans": None}, "missing key(s) ans"),
        ({"images": np.zeros((40, 64, 64), np.uint8)}, "expected (N, S, S, 3)"),
        ({"images": np.zeros((40, 64, 64, 3), np.float32)}, "dtype float32, expected uint8"),
        ({"ans": np.full(40, 10, np.uint8)}, "label 10 at index 0 is outside 0-9"),
        ({"ans": np.array([0.5] * 40)}, "non-integer labels"),
        ({"redshift": np.zeros(39, np.float32)}, "'redshift' has shape (39,)"),
    ],
)
def test_bad_schema_is_one_clear_error(tmp_path, override, message):
    path = make_galaxy10(tmp_path / "bad.h5", **override)
    with pytest.raises(UserError) as err:
        S.validate_h5(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_folder_and_non_hdf5_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        S.validate_h5(tmp_path / "nope.h5")
    with pytest.raises(UserError, match="is a folder"):
        S.validate_h5(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        S.validate_h5(text)


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_file_fails_and_leaves_nothing(tmp_path):
    src = truncate(make_galaxy10(tmp_path / "cut.h5", n=64))
    out = tmp_path / "prepared"
    with pytest.raises(UserError) as err:
        D.prepare(src, out, size=32)
    assert str(src) in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cut.h5"]


def test_prepare_shapes_split_and_meta(g10, tmp_path):
    res = D.prepare(g10, tmp_path / "p", size=32, seed=3)
    assert not res.cached
    data = D.load_prepared(tmp_path / "p")
    assert data.images.shape == (40, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == (np.arange(40) % 10).tolist()
    counts = np.stack([np.bincount(data.labels[data.split == s], minlength=10) for s in range(3)])
    assert counts.sum() == 40 and (counts[0] == 3).all() and counts[1:].sum() == 10  # 4 per class -> 3/0.5/0.5
    assert data.meta["source_blake3"] == blake3.blake3(g10.read_bytes()).hexdigest()
    assert "source_sha256" not in data.meta
    assert data.meta["counts"]["train"] == counts[0].tolist()
    # anti-aliased resize: a flat image stays flat, and the mean brightness is kept
    first = np.asarray(data.images[0], dtype=np.float64)
    with __import__("h5py").File(g10) as f:
        original = f["images"][0].astype(np.float64)
    assert abs(first.mean() - original.mean()) < 1.5


def test_a_synthetic_file_holds_out_30_percent_for_testing_and_a_real_one_10(tmp_path):
    # 100 images per class: 80 / 10 / 10 for a real file; 60 / 10 / 30 when the file says it is synthetic (its
    # images cost only rendering, so its test split can be three times as large)
    counts = {}
    for name, synthetic in (("real", False), ("synthetic", True)):
        path = make_galaxy10(tmp_path / f"{name}.h5", n=1000, side=16)
        if synthetic:
            with h5py.File(path, "a") as f:
                f.attrs["synthetic"] = True
        res = D.prepare(path, tmp_path / name, size=16)
        counts[name] = [res.meta["counts"][s] for s in D.SPLITS]
        assert res.meta["fractions"] == list(D.SYNTHETIC_FRACTIONS if synthetic else D.DEFAULT_FRACTIONS)
    assert counts["real"] == [[80] * 10, [10] * 10, [10] * 10]
    assert counts["synthetic"] == [[60] * 10, [10] * 10, [30] * 10]
    # asked for explicitly, the fractions hold for a synthetic file too
    res = D.prepare(tmp_path / "synthetic.h5", tmp_path / "asked", size=16, fractions=D.DEFAULT_FRACTIONS)
    assert [res.meta["counts"][s] for s in D.SPLITS] == counts["real"]


def test_prepare_is_cached_by_content(g10, tmp_path):
    out = tmp_path / "p"
    first = D.prepare(g10, out, size=32)
    stamp = (out / "images.npy").stat().st_mtime_ns
    second = D.prepare(g10, out, size=32)
    assert second.cached and second.key == first.key
    assert (out / "images.npy").stat().st_mtime_ns == stamp
    # another setting is another dataset; so is other content under the same name
    assert not D.prepare(g10, out, size=16).cached
    make_galaxy10(g10, seed=9)
    third = D.prepare(g10, out, size=16)
    assert not third.cached and third.key != first.key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g10.h5", "p"]


def test_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    a, b = D.stratified_split(labels, 1), D.stratified_split(labels, 1)
    assert (a == b).all() and not (a == D.stratified_split(labels, 2)).all()
    for c in range(10):
        assert np.bincount(a[labels == c], minlength=3).tolist() == [80, 10, 10]


def test_load_prepared_rejects_non_dataset(tmp_path):
    with pytest.raises(UserError, match="no such prepared dataset"):
        D.load_prepared(tmp_path / "absent")
    with pytest.raises(UserError, match="meta.json"):
        D.load_prepared(tmp_path)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802 - http.server naming
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _RangeHandler.payload = bytes(range(256)) * 4000
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/Galaxy10_DECals.h5", _RangeHandler.payload
    httpd.shutdown()


def test_download_verifies_and_resumes(server, tmp_path):
    url, payload = server
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "g.h5"
    (tmp_path / "g.h5.partial").write_bytes(payload[:1000])  # an interrupted earlier download
    seen = []
    S.download(url, dest, sha256=sha, progress=lambda have, total: seen.append((have, total)))
    assert dest.read_bytes() == payload
    assert seen[0][0] > 1000 and seen[-1] == (len(payload), len(payload))
    assert not (tmp_path / "g.h5.partial").exists()


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "g.h5"
    with pytest.raises(UserError, match="checksum mismatch"):
        S.download(url, dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_unreachable_is_user_error(tmp_path, refused_url):
    with pytest.raises(UserError, match="download failed"):
        S.download(refused_url, tmp_path / "x.h5", timeout=2)


def test_find_galaxy10_prefers_explicit_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert S.find_galaxy10() is None
    cached = tmp_path / ".astroNN" / "datasets" / "Galaxy10_DECals.h5"
    cached.parent.mkdir(parents=True)
    make_galaxy10(cached)
    assert S.find_galaxy10() == cached
    assert S.find_galaxy10(tmp_path / "x.h5") == tmp_path / "x.h5"


def test_astronn_source_uses_a_file_already_in_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cached = tmp_path / ".astroNN" / "datasets" / "Galaxy10_DECals.h5"
    cached.parent.mkdir(parents=True)
    make_galaxy10(cached)
    assert S.astronn_file() == cached  # no astroNN import needed once the file is there


# --------------------------------------------------------------------------------------------------
# The overlapped prepare (hash, read and resize at once) against the code it replaced


def make_chunked(path: Path, n: int = 37, side: int = 64, chunk: int = 4) -> Path:
    """A Galaxy10-format file whose images are gzip-compressed in HDF5 chunks of ``chunk`` images."""
    make_galaxy10(path, n=n, side=side, images=None)
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    images[:, side // 4 : side // 2] //= 4  # some structure, so the filter has edges to smooth
    with h5py.File(path, "a") as f:
        f.create_dataset("images", data=images, chunks=(chunk, side, side, 3), compression="gzip")
    return path


def old_prepare_arrays(path: Path, size: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The images.npy bytes, labels and redshift that the pre-overlap `prepare` wrote (its code, copied)."""
    import torch
    import torch.nn.functional as F

    chunks = []
    with h5py.File(path, "r") as f:
        labels = f["ans"][:].astype(np.uint8)
        redshift = f["redshift"][:].astype(np.float32)
        for start in range(0, len(labels), 256):  # the old CHUNK
            block = f["images"][start : start + 256]
            x = torch.from_numpy(np.ascontiguousarray(block)).permute(0, 3, 1, 2)  # (n, 3, S, S)
            y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            chunks.append(y.permute(0, 2, 3, 1).contiguous().numpy())  # (n, size, size, 3)
    images = np.concatenate(chunks)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(images.dtype), "fortran_order": False, "shape": images.shape}
    )
    return header.getvalue() + images.tobytes(), labels, redshift


@pytest.mark.timeout(60)
def test_prepare_writes_the_same_bytes_as_the_old_code(tmp_path, monkeypatch):
    src = make_chunked(tmp_path / "chunked.h5")
    # blocks of 2 chunks (8 images): 37 images make 5 blocks, the last one partial, through 3 reused buffers
    monkeypatch.setattr(D, "READ_BYTES", 8 * 64 * 64 * 3 + 100)
    D.prepare(src, tmp_path / "p", size=24, seed=2)
    images, labels, redshift = old_prepare_arrays(src, 24)
    assert (tmp_path / "p" / "images.npy").read_bytes() == images
    assert np.load(tmp_path / "p" / "labels.npy").tobytes() == labels.tobytes()
    assert np.load(tmp_path / "p" / "redshift.npy").tobytes() == redshift.tobytes()


def test_read_blocks_are_whole_hdf5_chunks():
    image = 64 * 64 * 3  # 12,288 bytes
    assert S.block_rows((4, 64, 64, 3), image, target=120_000) == 8  # 9 images fit, but 8 is 2 whole chunks
    assert S.block_rows((1, 64, 64, 3), image, target=120_000) == 9
    assert S.block_rows(None, image, target=120_000) == 9  # contiguous storage: any block
    assert S.block_rows((50, 64, 64, 3), image, target=120_000) == 50  # never less than one chunk


def prepare_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("prepare-")]


@pytest.mark.timeout(60)
def test_corrupt_chunk_is_one_line_error_and_stops_the_threads(tmp_path, monkeypatch):
    src = make_chunked(tmp_path / "bad.h5")
    with h5py.File(src, "r") as f:
        info = f["images"].id.get_chunk_info(3)  # images 12-15
    with open(src, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)  # the gzip stream of that chunk is now garbage
    monkeypatch.setattr(D, "READ_BYTES", 4 * 64 * 64 * 3)  # one chunk per block
    with pytest.raises(UserError) as err:
        D.prepare(src, tmp_path / "p", size=24)
    assert str(src) in str(err.value) and "cannot read images 12-16" in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]
    assert prepare_threads() == []


@pytest.mark.timeout(60)
def test_failure_while_resizing_stops_the_reader(tmp_path, monkeypatch):
    src = make_chunked(tmp_path / "c.h5")
    monkeypatch.setattr(D, "READ_BYTES", 4 * 64 * 64 * 3)

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt  # e.g. Ctrl-C after the first block

    with pytest.raises(KeyboardInterrupt) as err:  # held, as a caller's error handler would: the frame lives on
        D.prepare(src, tmp_path / "p", size=24, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
    assert prepare_threads() == [], err.traceback[-1]


def test_touched_source_is_still_a_cache_hit(g10, tmp_path):
    out = tmp_path / "p"
    first = D.prepare(g10, out, size=32)
    stamp = (out / "images.npy").stat().st_mtime_ns
    later = g10.stat().st_mtime_ns + 5_000_000_000
    os.utime(g10, ns=(later, later))  # same content, new mtime: hashed again, found equal
    second = D.prepare(g10, out, size=32)
    assert second.cached and second.key == first.key
    assert (out / "images.npy").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g10.h5", "p"]


def test_folder_of_version_1_is_re_prepared_not_a_crash(g10, tmp_path):
    """A folder from before BLAKE3 (version 1: a SHA256 under `source_sha256`, in its key too) is not a hit."""
    out = tmp_path / "p"
    D.prepare(g10, out, size=32)
    meta = json.loads((out / "meta.json").read_text())
    sha256 = hashlib.sha256(g10.read_bytes()).hexdigest()
    settings = {"source": sha256, "size": 32, "seed": 0, "fractions": [0.8, 0.1, 0.1], "version": 1}
    old_key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]  # version 1's formula
    del meta["source_blake3"]
    meta.update(version=1, source_sha256=sha256, key=old_key)  # source_stat unchanged: the same file, untouched
    (out / "meta.json").write_text(json.dumps(meta))
    fresh = (out / "images.npy").read_bytes()
    (out / "images.npy").write_bytes(fresh[:-1] + bytes([fresh[-1] ^ 1]))  # mark the old folder's images
    assert "(sha256 " + sha256[:12] in D.describe(D.load_prepared(out))  # `galaxy data info` still reads it
    again = D.prepare(g10, out, size=32)
    assert not again.cached and again.key != old_key
    now = json.loads((out / "meta.json").read_text())
    assert now["version"] == D.PREPARE_VERSION and now["source_blake3"] == blake3.blake3(g10.read_bytes()).hexdigest()
    assert "source_sha256" not in now
    assert (out / "images.npy").read_bytes() == fresh  # rewritten, not kept
    assert D.prepare(g10, out, size=32).cached  # and the new folder is a hit from then on
