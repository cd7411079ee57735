"""Benchmark how models trained on the synthetic default transfer to real Galaxy10 DECaLS images.

On the default synthetic set as ``galaxy/full`` makes it (4,000 images, seed 0, prepared at 128 px and split
60/10/30), against a labelled real Galaxy10-format file (default: the 50-image real dev file beside the
checkout, ``../shared/real-dev/galaxy10_real_dev.h5``; another with GALAXY_REAL=PATH):

(a) the realism report's classifier two-sample AUC (0.5: a classifier on image statistics cannot tell the
    sets apart), and its worst single statistic;
(b) the ``demo`` judge trained on the synthetic training split, scored on the real file: balanced accuracy
    (mean per-class recall; chance 0.10) with per-class recall, against the same judge trained without the
    survey-nuisance augmentations in the same run (the baseline), and both on the synthetic test split;
(c) the ``demo`` VQ-VAE trained on the synthetic training split: reconstruction PSNR on the real images vs
    on the synthetic test split.

Run with no arguments (about 10 minutes on 2 CPU cores; the synthetic file is cached like the pipeline's).
The last line reads ``realism: <ratio>x ...`` (real balanced accuracy with the augmentations over without).
Fifty images are few: one image moves a class's recall by 0.2 and the balanced accuracy by 0.02.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import from_preset  # noqa: E402
from model.data import load_prepared, prepare, resize_images  # noqa: E402
from model.galaxy10 import CLASS_NAMES  # noqa: E402
from model.judge import PRESETS as JUDGE_PRESETS  # noqa: E402
from model.judge import predict, train_judge  # noqa: E402
from model.metrics import balanced_accuracy, classification_report  # noqa: E402
from model.train_vqvae import evaluate_vqvae, train_vqvae  # noqa: E402
from model.vqvae import PRESETS as VQVAE_PRESETS  # noqa: E402
from tasks.data import DEFAULT_SEED, DEFAULT_SYNTH_N, synth_file  # noqa: E402
from tasks.realism import realism_report  # noqa: E402

SIZE = 128
REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "real-dev" / "galaxy10_real_dev.h5"


def recalls(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(10,) recall of each class present in ``labels`` (NaN for an absent class)."""
    return np.array([(predicted[labels == c] == c).mean() if (labels == c).any() else np.nan for c in range(10)])


def judge_scores(nuisance: float, data, real_x: np.ndarray, real_y: np.ndarray) -> dict:
    """Train the demo judge (with the given nuisance strength) and score it on the real and synthetic test images."""
    config = from_preset(JUDGE_PRESETS, "demo", image_size=SIZE, seed=DEFAULT_SEED, nuisance=nuisance)
    (tx, ty), (vx, vy), (sx, sy) = (data.subset(s) for s in ("train", "val", "test"))
    t0 = time.perf_counter()
    model = train_judge(config, tx, ty, vx, vy).model
    seconds = time.perf_counter() - t0
    real_pred = predict(model, real_x)[0].argmax(1)
    test_pred = predict(model, sx)[0].argmax(1)
    return {
        "real": balanced_accuracy(classification_report(real_y, real_pred, config.num_classes)),
        "real_recall": recalls(real_y, real_pred),
        "test": balanced_accuracy(classification_report(sy, test_pred, config.num_classes)),
        "seconds": seconds,
    }


def main() -> None:
    torch.manual_seed(0)
    real = Path(os.environ.get("GALAXY_REAL") or REAL_DEV)
    if not real.is_file():
        sys.exit(f"{real}: no such file (set GALAXY_REAL to a labelled Galaxy10-format .h5)")
    with h5py.File(real, "r") as f:
        real_x, real_y = resize_images(f["images"][()], SIZE), f["ans"][()].astype(np.int64)
    print(f"real file: {real} ({len(real_y)} images, {len(np.unique(real_y))} classes)")

    t0 = time.perf_counter()
    synthetic = synth_file(DEFAULT_SYNTH_N, 256, DEFAULT_SEED)
    print(f"synthetic file: {synthetic} ({time.perf_counter() - t0:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        prepare(synthetic, Path(tmp) / "prepared", size=SIZE, seed=DEFAULT_SEED)
        data = load_prepared(Path(tmp) / "prepared")

        report = realism_report(real, synthetic, Path(tmp) / "realism", size=SIZE, log=False)
        print(report.table)
        print(f"(a) {report.last_line}")

        scores = {
            name: judge_scores(strength, data, real_x, real_y) for name, strength in (("with", 1.0), ("without", 0.0))
        }
        for name, s in scores.items():
            per_class = ", ".join(f"{CLASS_NAMES[c]} {r:.1f}" for c, r in enumerate(s["real_recall"]) if np.isfinite(r))
            print(
                f"(b) judge {name} nuisance augmentations ({s['seconds']:.0f} s): balanced accuracy on real "
                f"{s['real']:.3f}, on the synthetic test split {s['test']:.3f}; real recall: {per_class}"
            )

        vq_config = from_preset(VQVAE_PRESETS, "demo", seed=DEFAULT_SEED)
        train_x, _ = data.subset("train")
        val_x, _ = data.subset("val")
        test_x, _ = data.subset("test")
        vqvae = train_vqvae(vq_config, train_x, val_x).model
        psnr_real = evaluate_vqvae(vqvae, real_x)["psnr"]
        psnr_syn = evaluate_vqvae(vqvae, test_x)["psnr"]
        print(f"(c) demo VQ-VAE PSNR: real {psnr_real:.2f} dB, synthetic test split {psnr_syn:.2f} dB")

    w, wo = scores["with"], scores["without"]
    print(
        f"realism: {w['real'] / max(wo['real'], 1e-9):.2f}x judge balanced accuracy on {len(real_y)} real images "
        f"{w['real']:.3f} with nuisance augmentations vs {wo['real']:.3f} without (chance 0.100); realism AUC "
        f"{report.auc:.3f} ± {report.auc_sd:.3f}; VQ-VAE PSNR real {psnr_real:.2f} dB vs synthetic {psnr_syn:.2f} dB"
    )


if __name__ == "__main__":
    main()
