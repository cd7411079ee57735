"""GPU readiness in one run (``bash scripts/gpu-check.sh``): the CUDA paths of the two GPU benchmarks and a one-epoch
smoke run of the ``galaxy/article`` settings on a full-size (17,736-image) synthetic file, one line per figure.

    python scripts/gpu_check.py            on a CUDA machine: run it all (the shell script bounds it to 8 minutes)
    python scripts/gpu_check.py --dry-run  no GPU needed: check that every step can start, print the plan

Without a CUDA device it says so in one line on stderr and exits 1. Every figure line starts with ``gpu-check:``
and names the device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the benchmarks import their siblings as scripts do

N_IMAGES = 17_736  # Galaxy10 DECaLS
SAMPLER_BATCH, SAMPLER_REF = 256, 32  # the sampler's batch; the article loop's (scaled x8)


def smoke_config(source: str, data_dir: str):
    """The galaxy/article deployment's settings (prefect.yaml), one epoch per model, on ``source``."""
    from flows.pipeline import PipelineConfig

    return PipelineConfig(
        source=source,
        data_dir=data_dir,
        vqvae_preset="article",
        prior_preset="article",
        judge_preset="article",
        vqvae_epochs=1,
        prior_epochs=1,
        judge_epochs=1,
    )


def plan() -> list[str]:
    """What a run does, in order; importing each step's code on the way (a dry run's check)."""
    import sampler  # noqa: F401 - benchmarks/sampler.py
    import train_vqvae  # noqa: F401 - benchmarks/train_vqvae.py

    smoke_config(f"h5:synthetic_n{N_IMAGES}.h5", "prepared")
    return [
        "benchmarks/train_vqvae.py, CUDA path: article architecture at 128 px, bf16, images/s and s per epoch",
        f"benchmarks/sampler.py, CUDA path: {SAMPLER_BATCH} images at cfg 3, and the article loop on {SAMPLER_REF}",
        f"a synthetic {N_IMAGES:,}-image file (256 px), then the galaxy flow with the galaxy/article settings, "
        "one epoch per model",
    ]


def vqvae_line(device, name: str) -> str:
    from train_vqvae import GALAXY10_IMAGES, throughput

    r = throughput(device)
    return (
        f"gpu-check: train_vqvae on {name}: article arch 128 px bf16 {r['ours']:.0f} img/s = "
        f"{GALAXY10_IMAGES / r['ours']:.2f} s per {GALAXY10_IMAGES:,}-image epoch (target < 2 s); "
        f"naive loop {r['naive']:.0f} img/s ({r['ours'] / r['naive']:.2f}x)"
    )


def sampler_line(device, name: str) -> str:
    import torch
    from sampler import CFG, GRID, K, sampler_times

    from model.prior import ConditionalPrior, PriorConfig

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    config = PriorConfig(vocab_size=K, grid_h=GRID, grid_w=GRID, dim=256, heads=8, layers=6)
    model = ConditionalPrior(config).to(device).eval()
    t = sampler_times(model, SAMPLER_BATCH, SAMPLER_REF, device)
    return (
        f"gpu-check: sampler on {name}: {SAMPLER_BATCH} images cfg {CFG:g} in {t['cached']:.2f} s "
        f"({SAMPLER_BATCH / t['cached']:.0f} images/s); article loop {t['reference_scaled']:.1f} s "
        f"({t['reference_scaled'] / t['cached']:.0f}x, target >= 50x); same-seed tokens "
        f"{t['agree']:.0%} identical"
    )


def smoke_lines(name: str, workdir: Path) -> list[str]:
    """Synthesize the file, run the flow; one line each."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    os.environ.setdefault("GALAXY_RUNS", str(workdir / "runs"))
    os.environ.setdefault("GALAXY_REAL", "")
    os.environ.setdefault("GALAXY_PROGRESS", "0")
    from flows.pipeline import galaxy
    from tasks.data import synth_file

    t0 = time.perf_counter()
    src = synth_file(N_IMAGES, 256, 0, out=workdir / f"synthetic_n{N_IMAGES}.h5", workers=os.cpu_count())
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = galaxy(smoke_config(f"h5:{src}", str(workdir / "prepared")))
    flow_s = time.perf_counter() - t0
    vq, prior = results["vqvae"]["metrics"], results["prior"]["metrics"]
    return [
        f"gpu-check: synthetic file on {name} (CPU, {os.cpu_count()} processes): {N_IMAGES:,} images 256 px "
        f"in {synth_s:.0f} s",
        f"gpu-check: galaxy/article 1-epoch smoke on {name}: every stage in {flow_s:.0f} s; VQ-VAE val PSNR "
        f"{vq.get('final_val_psnr', float('nan')):.2f} dB, prior "
        f"{prior.get('val_bits_per_token', float('nan')):.3f} val bits/token, model {results['vqvae']['model_uri']}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="check that every step can start; print the plan")
    args = parser.parse_args()
    import torch

    if args.dry_run:
        where = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device here"
        for i, step in enumerate(plan(), 1):
            print(f"gpu-check --dry-run: step {i}: {step}")
        print(f"gpu-check --dry-run: every step can start ({where}); a run takes up to 8 minutes on a GPU")
        return 0
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none"
        message = f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build {build}); nothing checked"
        print(message, file=sys.stderr)
        return 1
    device = torch.device("cuda")
    name = torch.cuda.get_device_name()
    print(vqvae_line(device, name), flush=True)
    print(sampler_line(device, name), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for line in smoke_lines(name, Path(tmp)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
