"""Benchmark E1: seconds per judge training epoch with augmentation at full resolution vs after input pooling.

The `demo` judge pools its 128-px input to 64 px, yet by default flips, rotates and applies the survey nuisances
(model.nuisance) at 128 px; `augment_pooled=True` augments after the pooling (done once, before the first epoch).
For each mode this times, on the training split of a prepared dataset: the augmentation alone over one epoch's
batches (`augmented_batch`), and one full training epoch (`train_judge`'s `epoch_time_s`, the optimizer steps
without validation). The modes alternate (F, P, F, P, ...) so that a slow spell of a shared machine hits both;
medians are printed. Set the thread count from outside (OMP_NUM_THREADS=1 for one thread).

    OMP_NUM_THREADS=1 python benchmarks/judge_augment.py [/path/to/prepared [repeats]]

Without a path it uses data/prepared when present, else 2,400 random 128-px images (the timings do not depend
on what the images show). The last line: `judge_augment: <full / pooled epoch>x ...`.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from model.config import from_preset
from model.data import load_prepared
from model.judge import PRESETS, MorphologyCNN, augmented_batch, train_judge, training_inputs


def augmentation_seconds(config, images: torch.Tensor) -> float:
    """Seconds to augment one epoch's batches (no model step; the one-off pooling of ``training_inputs`` not
    counted)."""
    model = MorphologyCNN(config)
    images = training_inputs(model, images)
    generator = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(images), generator=generator)  # (N,)
    start = time.perf_counter()
    for i in range(len(images) // config.batch_size):
        augmented_batch(model, images[perm[i * config.batch_size : (i + 1) * config.batch_size]], generator)
    return time.perf_counter() - start


def splits(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train images, labels, val images, labels, what they are)."""
    if path is None and Path("data/prepared/meta.json").is_file():
        path = "data/prepared"
    if path is not None:
        data = load_prepared(path)
        return *data.subset("train"), *data.subset("val", 64), path
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2464, 128, 128, 3), dtype=np.uint8)  # (N, S, S, 3)
    labels = rng.integers(0, 10, 2464)
    return images[:2400], labels[:2400], images[2400:], labels[2400:], "random images"


def main() -> None:
    train_x, train_y, val_x, val_y, what = splits(sys.argv[1] if len(sys.argv) > 1 else None)
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    base = from_preset(PRESETS, "demo", image_size=train_x.shape[1], epochs=1, device="cpu", augment_pooled=False)
    modes = {"full": base, "pooled": dataclasses.replace(base, augment_pooled=True)}
    images = torch.from_numpy(train_x)
    times: dict[str, dict[str, list[float]]] = {m: {"augment": [], "epoch": []} for m in modes}
    print(
        f"{len(train_x)} training images ({what}), {base.image_size} px, batch {base.batch_size}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    for r in range(repeats):
        for name, config in modes.items():
            times[name]["augment"].append(augmentation_seconds(config, images))
            result = train_judge(config, train_x, train_y, val_x, val_y)
            times[name]["epoch"].append(result.history[0]["epoch_time_s"])
            print(
                f"  run {r + 1} {name:>6}: augmentation {times[name]['augment'][-1]:6.1f} s, "
                f"epoch {times[name]['epoch'][-1]:6.1f} s",
                flush=True,
            )
    medians = {m: {k: statistics.median(v) for k, v in times[m].items()} for m in modes}
    for name, m in medians.items():
        line = f"augmentation {m['augment']:6.1f} s/epoch, training epoch {m['epoch']:6.1f} s (median of {repeats})"
        print(f"{name:>6}: {line}")
    full, pooled = medians["full"], medians["pooled"]
    print(
        f"judge_augment: {full['epoch'] / pooled['epoch']:.2f}x judge epoch with augmentation after pooling: "
        f"{pooled['epoch']:.1f} s vs {full['epoch']:.1f} s at full resolution (augmentation alone "
        f"{pooled['augment']:.1f} vs {full['augment']:.1f} s), {torch.get_num_threads()} thread(s)"
    )


if __name__ == "__main__":
    main()
