"""The data commands: every case in-process through Typer's CliRunner, and one real console-script run each.

The in-process runs see exactly what a user sees (exit code, stdout, stderr) without paying for a new
interpreter and its imports; the console-script runs check the installed entry point and that a real
process prints a user error as one line with no traceback and no import-time noise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import console, make_galaxy10


def galaxy(*args: str):
    """Run `galaxy ARGS` in this process (the working folder is the caller's)."""
    from cli.main import app

    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result, *needles: str) -> None:
    """Exit code 2 and a single 'error: ...' line on stderr holding every needle; no traceback."""
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_prepare_then_info_then_cached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = make_galaxy10(tmp_path / "g.h5")
    first = galaxy("data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p")
    assert first.exit_code == 0, first.output
    assert "prepared" in first.stdout and "40 images" in first.stdout
    again = galaxy("data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p")
    assert again.exit_code == 0 and "already prepared, nothing to do" in again.stdout
    info = galaxy("data", "info", "p")
    assert info.exit_code == 0
    assert "edge-on with bulge" in info.stdout and "train" in info.stdout and "40" in info.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    "override, needle",
    [({"pxscale": None}, "missing key(s) pxscale"), ({"ans": [12] * 40}, "outside 0-9")],
)
def test_bad_file_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, override, needle):
    monkeypatch.chdir(tmp_path)
    src = make_galaxy10(tmp_path / "bad.h5", **override)
    result = galaxy("data", "prepare", "--source", f"h5:{src}", "--size", "32", "--out", "p")
    assert_one_line_error(result, str(src), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_truncated_and_missing_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = make_galaxy10(tmp_path / "cut.h5", n=64)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert_one_line_error(galaxy("data", "prepare", "--source", f"h5:{src}", "--out", "p", "--size", "32"), str(src))
    assert not (tmp_path / "p").exists()
    assert_one_line_error(galaxy("data", "info", "nowhere"), "nowhere", "no such prepared dataset")
    assert_one_line_error(galaxy("data", "prepare", "--source", "s3:x", "--out", "p"), "expected synthetic")
    assert_one_line_error(galaxy("data", "prepare", "--source", "h5:", "--out", "p"), "needs a path")


def test_synth_and_synthetic_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = galaxy("data", "synth", "--n", "12", "--size", "64", "--seed", "3", "--out", "s.h5", "--workers", "1")
    assert made.exit_code == 0, made.output
    assert "wrote s.h5 (12 images, 64 px, seed 3)" in made.stdout
    # the synthetic source renders into ~/.cache/galaxy: the test's own HOME
    prep = galaxy("data", "prepare", "--source", "synthetic", "--n", "12", "--size", "32", "--out", "p")
    assert prep.exit_code == 0, prep.output
    assert list((Path.home() / ".cache" / "galaxy").glob("synthetic_n12_s0_256px_*.h5"))
    assert "synthetic source synthetic-n12-s0" in galaxy("data", "info", "p").stdout
    assert_one_line_error(galaxy("data", "synth", "--n", "5", "--out", "no/such/dir/s.h5"), "no/such/dir")


def test_astronn_source_without_the_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        import astroNN  # noqa: F401
    except Exception:
        result = galaxy("data", "prepare", "--source", "astronn", "--out", "p")
        assert_one_line_error(result, "astroNN is not usable here", "galaxy-vqvae[astronn]")
        assert not (tmp_path / "p").exists()
    else:
        pytest.skip("astroNN is installed here")


def test_download_failure_is_one_line(tmp_path, monkeypatch, refused_url):
    monkeypatch.chdir(tmp_path)
    result = galaxy("data", "download", "--url", refused_url, "--out", "g.h5")
    assert_one_line_error(result, refused_url, "download failed")
    assert not (tmp_path / "g.h5").exists()


@pytest.mark.parametrize(
    "command, needle",
    [
        (["data", "prepare", "--source", "s3:x", "--out", "p"], "expected synthetic"),
        (["data", "info", "nowhere"], "nowhere: no such prepared dataset"),
        (["data", "synth", "--n", "5", "--out", "no/such/dir/s.h5"], "no/such/dir"),
        (["data", "download", "--url", "{url}", "--out", "g.h5"], "download failed"),
    ],
    ids=["prepare", "info", "synth", "download"],
)
def test_console_script_user_error(tmp_path, refused_url, command, needle):
    proc = console(*[a.format(url=refused_url) for a in command], cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert list(tmp_path.iterdir()) == []
