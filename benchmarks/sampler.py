"""Benchmark: the cached, batched-guidance sampler against the article's full-prefix loop; prior training speed;
the cost of the redshift condition in sampling.

Runs with no arguments on a CPU in a few minutes. The prior is the article's size (6 layers, width 256,
8 heads) on a 1024-code, 16x16 grid, randomly initialised (sampling cost does not depend on the weights).
On CPU both samplers run on one thread (the machine is usually shared; one thread is also faster there).
Both are timed on the same 16 images (the article loop takes about 3 minutes on a quiet 2-core CPU);
SAMPLER_BENCH_REF_IMAGES=2 times the loop on 2 images and scales it x8 for a quick run (its cost is linear
in the batch). When CUDA is available it also times a batch of 256 images on the GPU (the article loop
there on 32 images, scaled x8).

The condition's cost: the same prior with and without a redshift condition (Fourier features added at the
class position, so only the first step changes), the same images at cfg 3, timed alternately, best of 3
each (16 images on the CPU, 256 on the GPU).
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch
from reference_sampler import reference_generate  # the sibling file: benchmarks run as scripts

from model.config import from_preset
from model.prior import PRESETS, ConditionalPrior, PriorConfig
from model.sampling import generate
from model.train_prior import configure_optimizer, next_token_loss

K, GRID, N_IMAGES, CFG = 1024, 16, 16, 3.0
N_REFERENCE_CPU = int(
    os.environ.get("SAMPLER_BENCH_REF_IMAGES", "16")
)  # fewer (e.g. 2) for a quick run, scaled linearly


def timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    """Seconds taken by fn() (device synchronised) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def labels_for(n: int, device: torch.device) -> torch.Tensor:
    """Classes 0..9 repeated: (n,)."""
    return torch.arange(n, device=device) % 10


def sampler_times(model: ConditionalPrior, n: int, n_ref: int, device: torch.device) -> dict[str, float]:
    """Cached sampler on n images and on n_ref; the reference loop on n_ref images (cfg 3, default sampling)."""
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    generate(model, 2, labels_for(2, device), cfg_scale=CFG, generator=gen())  # warm-up
    t_cached, _ = timed(lambda: generate(model, n, labels_for(n, device), cfg_scale=CFG, generator=gen()), device)
    t_cached_small, a = timed(
        lambda: generate(model, n_ref, labels_for(n_ref, device), cfg_scale=CFG, generator=gen()), device
    )
    t_ref, b = timed(
        lambda: reference_generate(model, n_ref, labels_for(n_ref, device), cfg_scale=CFG, generator=gen()), device
    )
    return {
        "cached": t_cached,
        "cached_small": t_cached_small,
        "reference_small": t_ref,
        "reference_scaled": t_ref * n / n_ref,
        "agree": float((a == b).float().mean()),
    }


def condition_cost(config: PriorConfig, n: int, device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds to sample n images at cfg 3 with the class-only prior and with the same prior
    conditioned on redshift (class and redshift given), timed alternately so that load drifts hit both."""
    torch.manual_seed(0)
    plain = ConditionalPrior(config).to(device).eval()
    torch.manual_seed(0)
    z_config = dataclasses.replace(config, condition="redshift", condition_range=(0.0, 0.4))
    with_z = ConditionalPrior(z_config).to(device).eval()
    labels = labels_for(n, device)
    z = torch.linspace(0.01, 0.39, n)
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    runs = {
        "plain": lambda: generate(plain, n, labels, cfg_scale=CFG, generator=gen()),
        "with_z": lambda: generate(with_z, n, labels, condition_values=z, cfg_scale=CFG, generator=gen()),
    }
    generate(plain, 2, labels[:2], cfg_scale=CFG, generator=gen())  # warm-up
    generate(with_z, 2, labels[:2], condition_values=z[:2], cfg_scale=CFG, generator=gen())
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], timed(run, device)[0])
    # the only added work, alone: the condition's embedding of the 2n guided rows, once per batch
    rows = torch.cat([z, torch.full_like(z, float("nan"))]).to(device)  # (2n,)
    with torch.no_grad():
        calls = 200
        t, _ = timed(lambda: [with_z.condition_embedding(rows, 2 * n) for _ in range(calls)], device)
    best["embedding"] = t / calls
    return best


def train_throughput(preset: str, vocab: int, batch: int, steps: int) -> float:
    """Tokens/s of prior training steps (forward, backward, AdamW) for a preset's architecture on CPU."""
    config = from_preset(PRESETS, preset, vocab_size=vocab, grid_h=GRID, grid_w=GRID)
    torch.manual_seed(0)
    model = ConditionalPrior(config).train()
    optimizer = configure_optimizer(model, config)
    x = torch.randint(0, vocab, (batch, config.seq_len))
    y = torch.randint(0, config.num_classes, (batch,))

    def step() -> None:
        loss = next_token_loss(model(x, y), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * config.seq_len / (time.perf_counter() - t0)


def main() -> None:
    """Run every measurement and print the summary line last."""
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    config = PriorConfig(vocab_size=K, grid_h=GRID, grid_w=GRID, dim=256, heads=8, layers=6)
    torch.manual_seed(0)
    model = ConditionalPrior(config).eval()
    print(
        f"prior: {config.layers} layers, width {config.dim}, {config.heads} heads, K={K}, T={config.seq_len}, "
        f"{model.num_params() / 1e6:.2f}M params; CPU threads: {torch.get_num_threads()}"
    )

    t = sampler_times(model, N_IMAGES, N_REFERENCE_CPU, cpu)
    print(
        f"CPU cached sampler, {N_IMAGES} images, cfg {CFG:g}: {t['cached']:.1f} s "
        f"({N_IMAGES / t['cached']:.2f} images/s)"
    )
    print(
        f"CPU {N_REFERENCE_CPU} images, cfg {CFG:g}: cached {t['cached_small']:.1f} s, article loop "
        f"{t['reference_small']:.1f} s -> {t['reference_small'] / t['cached_small']:.1f}x at equal batch; "
        f"same-seed tokens identical: {t['agree']:.1%}"
    )
    cpu_ratio = t["reference_scaled"] / t["cached"]
    how = (
        "timed in full"
        if N_REFERENCE_CPU == N_IMAGES
        else (f"estimated as {N_REFERENCE_CPU}-image time x {N_IMAGES / N_REFERENCE_CPU:g} (linear in batch)")
    )
    print(f"CPU article loop for {N_IMAGES} images, {how}: {t['reference_scaled']:.0f} s -> {cpu_ratio:.1f}x")

    gpu_summary = ""
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        model_gpu = ConditionalPrior(config).to(gpu).eval()
        g = sampler_times(model_gpu, 256, 32, gpu)
        gpu_ratio = g["reference_scaled"] / g["cached"]
        print(
            f"GPU ({torch.cuda.get_device_name()}) 256 images cfg {CFG:g}: cached {g['cached']:.2f} s "
            f"({256 / g['cached']:.0f} images/s); article loop on 32 images {g['reference_small']:.1f} s, "
            f"x8 = {g['reference_scaled']:.0f} s -> {gpu_ratio:.1f}x"
        )
        gpu_summary = f"; GPU 256 images {256 / g['cached']:.0f} images/s, {gpu_ratio:.0f}x"
        cg = condition_cost(config, 256, gpu)
        print(
            f"GPU condition cost, 256 images cfg {CFG:g}: class only {cg['plain']:.2f} s, "
            f"class + redshift {cg['with_z']:.2f} s -> {cg['with_z'] / cg['plain'] - 1.0:+.1%}"
        )
        gpu_summary += f", redshift condition {cg['with_z'] / cg['plain'] - 1.0:+.1%}"

    c = condition_cost(config, N_IMAGES, cpu)
    cpu_cost = c["with_z"] / c["plain"] - 1.0
    print(
        f"CPU condition cost, {N_IMAGES} images cfg {CFG:g} (best of 3, alternated): class only {c['plain']:.2f} s, "
        f"class + redshift {c['with_z']:.2f} s -> {cpu_cost:+.1%}; the added work alone (the Fourier embedding of "
        f"the {2 * N_IMAGES} guided rows, once) {c['embedding'] * 1e6:.0f} us = "
        f"{c['embedding'] / c['plain']:.4%} of the sampling"
    )

    demo_tps = train_throughput("demo", vocab=256, batch=32, steps=3)
    article_tps = train_throughput("article", vocab=K, batch=8, steps=2)
    print(
        f"CPU prior training (1 thread): demo preset {demo_tps:,.0f} tokens/s "
        f"(~{3000 * 256 / demo_tps:.0f} s per epoch of 3k x 256 tokens); article preset {article_tps:,.0f} tokens/s"
    )

    scaled = "" if N_REFERENCE_CPU == N_IMAGES else f", scaled x{N_IMAGES // N_REFERENCE_CPU}"
    print(
        f"sampler: {cpu_ratio:.0f}x cached+batched-CFG sampler vs article loop, {N_IMAGES} images cfg {CFG:g} "
        f"T=256 K={K} 6x256 prior on 1 CPU thread: {t['cached']:.1f} s vs {t['reference_scaled']:.0f} s "
        f"(reference timed on {N_REFERENCE_CPU} images{scaled}; "
        f"{t['reference_small'] / t['cached_small']:.0f}x at equal batch); redshift condition {cpu_cost:+.1%} "
        f"({c['with_z']:.2f} s vs {c['plain']:.2f} s; its embedding {c['embedding'] / c['plain']:.3%}){gpu_summary}; "
        f"training {demo_tps:,.0f} tok/s demo, {article_tps:,.0f} tok/s article"
    )


if __name__ == "__main__":
    main()
