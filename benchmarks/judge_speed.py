"""Benchmark E1: the `demo` judge's convolutions in NCHW (PyTorch's default) vs channels-last (NHWC) on this machine,
and its training step in float32 vs under bf16 autocast (what `train_judge` uses where the CPU has AMX).

`MorphologyCNN` keeps its conv blocks and their input channels-last. This times, on random data (the timings do
not depend on what the images show), with the same weights in both layouts: (a) the symmetric judging of 512
128-px images (`predict`: 8 flips and rotations, 64 px after pooling), as the evaluation judges every sample and
reference image; (b) one training step on a batch of the preset's size at 64 px (forward, backward, AdamW). The
layouts alternate (NCHW, NHWC, NCHW, ...) so that a slow spell of a shared machine hits both; medians are printed,
with the largest difference of the features between the layouts. (c) the NHWC training step under bf16 autocast,
timed beside (b) in each repeat (on a CPU without AMX bf16 is emulated: expect it slower). Set the thread count
from outside.

    OMP_NUM_THREADS=2 python benchmarks/judge_speed.py [repeats]

The last line: `judge_speed: judging <NCHW / NHWC>x, training step <NCHW / NHWC>x, bf16 step <NHWC fp32 / bf16>x`.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from model.judge import PRESETS, MorphologyCNN, predict
from model.training import native_bf16


def judge_in(layout: torch.memory_format, state: dict) -> MorphologyCNN:
    """The demo judge with `state`'s weights, its conv blocks in `layout`, every input converted to it."""
    model = MorphologyCNN(PRESETS["demo"])
    model.load_state_dict(state)
    model.blocks.to(memory_format=layout)
    features = model.features

    def in_layout(x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        x = x if pooled else model.pool(x)
        return model.blocks(x.contiguous(memory_format=layout)).mean(dim=(2, 3))

    model.features = in_layout if layout != torch.channels_last else features  # the shipped path for NHWC
    return model.eval()


def judging_seconds(model: MorphologyCNN, images: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    _, feats = predict(model, images)
    return time.perf_counter() - start, feats


def step_seconds(model: MorphologyCNN, steps: int = 5, bf16: bool = False) -> float:
    """Median seconds of a training step at the preset's batch size on pooled 64-px inputs (``bf16``: the forward
    under bf16 autocast, as ``train_judge`` runs it)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    size = config.image_size // config.input_pool
    x = torch.rand(config.batch_size, 3, size, size, generator=generator) * 2 - 1  # (B, 3, 64, 64)
    y = torch.randint(0, config.num_classes, (config.batch_size,), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x, pooled=True)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    torch.manual_seed(0)
    state = MorphologyCNN(PRESETS["demo"]).state_dict()
    images = np.random.default_rng(0).integers(0, 256, (512, 128, 128, 3), dtype=np.uint8)
    layouts = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
    judging: dict[str, list[float]] = {name: [] for name in layouts}
    steps: dict[str, list[float]] = {name: [] for name in layouts}
    feats: dict[str, np.ndarray] = {}
    bf16_steps: list[float] = []
    print(
        f"threads {torch.get_num_threads()}, demo judge, 512 images judged (8 views), training batch "
        f"{PRESETS['demo'].batch_size}, AMX {native_bf16(torch.device('cpu'))}"
    )
    for r in range(repeats):
        for name, layout in layouts.items():
            seconds, feats[name] = judging_seconds(judge_in(layout, state), images)
            judging[name].append(seconds)
            steps[name].append(step_seconds(judge_in(layout, state)))
            print(f"  repeat {r + 1} {name}: judging {seconds:.2f} s, training step {steps[name][-1] * 1000:.0f} ms")
        bf16_steps.append(step_seconds(judge_in(torch.channels_last, state), bf16=True))
        print(f"  repeat {r + 1} NHWC bf16: training step {bf16_steps[-1] * 1000:.0f} ms")
    j = {name: statistics.median(v) for name, v in judging.items()}
    s = {name: statistics.median(v) for name, v in steps.items()}
    b = statistics.median(bf16_steps)
    diff = float(np.abs(feats["NCHW"] - feats["NHWC"]).max())
    print(
        f"median judging: NCHW {j['NCHW']:.2f} s, NHWC {j['NHWC']:.2f} s; training step: NCHW "
        f"{s['NCHW'] * 1000:.0f} ms, NHWC {s['NHWC'] * 1000:.0f} ms, NHWC bf16 {b * 1000:.0f} ms; largest feature "
        f"difference {diff:.1e}"
    )
    print(
        f"judge_speed: judging {j['NCHW'] / j['NHWC']:.2f}x, training step {s['NCHW'] / s['NHWC']:.2f}x, "
        f"bf16 step {s['NHWC'] / b:.2f}x"
    )


if __name__ == "__main__":
    main()
