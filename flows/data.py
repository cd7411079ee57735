"""The data stage as a Prefect flow: prepare a source, then report its counts."""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.data import DEFAULT_SEED, DEFAULT_SYNTH_N, describe_task, prepare_task


@flow(name="galaxy-data", log_prints=False)
def data_flow(
    source: str = "synthetic",
    out: str = "data/prepared",
    size: int = 128,
    seed: int = DEFAULT_SEED,
    synthetic_n: int = DEFAULT_SYNTH_N,
) -> str:
    """Prepare ``source`` into ``out`` (cached by content) and log its counts per class and split."""
    root = prepare_task(source, out, size=size, seed=seed, synthetic_n=synthetic_n)
    get_run_logger().info("\n%s", describe_task(root))
    return root
