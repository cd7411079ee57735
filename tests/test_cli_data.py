"""The data commands as a user runs them: the real console script, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_galaxy10

GALAXY = str(Path(sys.executable).with_name("galaxy"))


def galaxy(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "GALAXY_PROGRESS": "0", **(env or {})}
    return subprocess.run([GALAXY, *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_prepare_then_info_then_cached(tmp_path):
    src = make_galaxy10(tmp_path / "g.h5")
    first = galaxy("data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "prepared" in first.stdout and "40 images" in first.stdout
    again = galaxy("data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p", cwd=tmp_path)
    assert again.returncode == 0 and "already prepared, nothing to do" in again.stdout
    info = galaxy("data", "info", "p", cwd=tmp_path)
    assert info.returncode == 0
    assert "edge-on with bulge" in info.stdout and "train" in info.stdout and "40" in info.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    "override, needle",
    [({"pxscale": None}, "missing key(s) pxscale"), ({"ans": [12] * 40}, "outside 0-9")],
)
def test_bad_file_exits_2_with_one_line_and_writes_nothing(tmp_path, override, needle):
    src = make_galaxy10(tmp_path / "bad.h5", **override)
    proc = galaxy("data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p", cwd=tmp_path)
    assert_one_line_error(proc, str(src), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_truncated_and_missing_inputs(tmp_path):
    src = make_galaxy10(tmp_path / "cut.h5", n=64)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    proc = galaxy("data", "prepare", "--source", f"h5:{src}", "--out", "p", "--size", "32", cwd=tmp_path)
    assert_one_line_error(proc, str(src))
    assert not (tmp_path / "p").exists()
    assert_one_line_error(galaxy("data", "info", "nowhere", cwd=tmp_path), "nowhere", "no such prepared dataset")
    assert_one_line_error(galaxy("data", "prepare", "--source", "s3:x", "--out", "p", cwd=tmp_path), "expected synthetic")


def test_synth_and_synthetic_source(tmp_path):
    env = {"GALAXY_CACHE": str(tmp_path / "cache")}
    made = galaxy("data", "synth", "--n", "12", "--size", "64", "--seed", "3", "--out", "s.h5", "--workers", "1", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    assert "wrote s.h5 (12 images, 64 px, seed 3)" in made.stdout
    prep = galaxy("data", "prepare", "--source", "synthetic", "--n", "20", "--size", "32", "--out", "p", cwd=tmp_path, env=env)
    assert prep.returncode == 0, prep.stderr
    info = galaxy("data", "info", "p", cwd=tmp_path)
    assert "synthetic source synthetic-n20-s0" in info.stdout
    assert_one_line_error(galaxy("data", "synth", "--n", "5", "--out", "no/such/dir/s.h5", cwd=tmp_path), "no/such/dir")


def test_astronn_source_without_the_extra_is_one_line(tmp_path):
    try:
        import astroNN  # noqa: F401
    except Exception:
        proc = galaxy("data", "prepare", "--source", "astronn", "--out", "p", cwd=tmp_path)
        assert_one_line_error(proc, "astroNN is not usable here", "galaxy-vqvae[astronn]")
        assert not (tmp_path / "p").exists()
    else:
        pytest.skip("astroNN is installed here")
