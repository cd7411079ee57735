"""scripts/gpu-check.sh where there is no GPU: one line saying so and a non-zero exit; its dry run checks that
every step (the two benchmarks' CUDA paths, the galaxy/article smoke settings) can start."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/gpu-check.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_says_so_in_one_line_and_exits_nonzero():
    proc = gpu_check()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout == ""
    build = torch.version.cuda or "none"
    assert proc.stderr.strip().splitlines() == [
        f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build {build}); nothing checked"
    ]


def test_dry_run_checks_every_step_and_prints_the_plan(monkeypatch, capsys):
    # in this process (torch, prefect and the project are imported already): a subprocess would cost 7 CPU-seconds
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on it
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--dry-run"])
    try:
        assert runpy.run_path(str(ROOT / "scripts" / "gpu_check.py"))["main"]() == 0
    finally:
        for name in ("sampler", "train_vqvae", "reference_sampler"):  # the benchmarks, imported as scripts
            sys.modules.pop(name, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == ["step 1", "step 2", "step 3"], lines
    assert "train_vqvae.py" in lines[0] and "256 images" in lines[1] and "17,736-image" in lines[2], lines
    assert lines[3].startswith("gpu-check --dry-run: every step can start"), lines
