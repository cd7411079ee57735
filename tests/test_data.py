"""Loader, download, prepare and caching, and every bad-input case of SPEC D4."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from model import data as D
from model.errors import UserError
from tests.conftest import make_galaxy10


def test_validate_accepts_official_schema(g10):
    info = D.validate_h5(g10)
    assert (info.n, info.side, info.synthetic) == (40, 64, False)


def test_iter_chunks_streams_everything(g10):
    info = D.validate_h5(g10)
    seen = [(start, len(images)) for start, images, _, _ in D.iter_chunks(info, chunk=16)]
    assert seen == [(0, 16), (16, 16), (32, 8)]


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
        D.validate_h5(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_folder_and_non_hdf5_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        D.validate_h5(tmp_path / "nope.h5")
    with pytest.raises(UserError, match="is a folder"):
        D.validate_h5(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        D.validate_h5(text)


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
    assert data.meta["source_sha256"] == hashlib.sha256(g10.read_bytes()).hexdigest()
    assert data.meta["counts"]["train"] == counts[0].tolist()
    # anti-aliased resize: a flat image stays flat, and the mean brightness is kept
    first = np.asarray(data.images[0], dtype=np.float64)
    with __import__("h5py").File(g10) as f:
        original = f["images"][0].astype(np.float64)
    assert abs(first.mean() - original.mean()) < 1.5


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
    D.download(url, dest, sha256=sha, progress=lambda have, total: seen.append((have, total)))
    assert dest.read_bytes() == payload
    assert seen[0][0] > 1000 and seen[-1] == (len(payload), len(payload))
    assert not (tmp_path / "g.h5.partial").exists()


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "g.h5"
    with pytest.raises(UserError, match="checksum mismatch"):
        D.download(url, dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_unreachable_is_user_error(tmp_path, refused_url):
    with pytest.raises(UserError, match="download failed"):
        D.download(refused_url, tmp_path / "x.h5", timeout=2)


def test_find_galaxy10_prefers_explicit_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert D.find_galaxy10() is None
    cached = tmp_path / ".astroNN" / "datasets" / "Galaxy10_DECals.h5"
    cached.parent.mkdir(parents=True)
    make_galaxy10(cached)
    assert D.find_galaxy10() == cached
    assert D.find_galaxy10(tmp_path / "x.h5") == tmp_path / "x.h5"


def test_astronn_source_uses_a_file_already_in_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cached = tmp_path / ".astroNN" / "datasets" / "Galaxy10_DECals.h5"
    cached.parent.mkdir(parents=True)
    make_galaxy10(cached)
    assert D.astronn_file() == cached  # no astroNN import needed once the file is there
