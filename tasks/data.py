"""Data-stage tasks: resolve a source (synthetic, an .h5 path, astroNN), prepare it, describe it.

Each Prefect task is a thin wrapper over a plain function of the same name without the ``_task``
suffix; the CLI calls the plain functions, flows call the tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task

from model import data as D
from model import source as S
from model.errors import UserError
from model.synth_labels import DEFAULT_SYNTH_N, source_label
from tasks.cache import prepare_cache_key
from tasks.progress import bar
from tasks.retry import retry_on_io

DEFAULT_SEED = 0


def cache_dir() -> Path:
    """Where generated synthetic files live: $GALAXY_CACHE, else ~/.cache/galaxy."""
    return Path(os.environ.get("GALAXY_CACHE", Path.home() / ".cache" / "galaxy"))


def synth_file(n: int, size: int, seed: int, out: str | Path | None = None, workers: int | None = None) -> Path:
    """Generate (or reuse) a synthetic Galaxy10-format file and return its path."""
    from model.synth import SYNTH_VERSION, synthesize

    if n < 1:
        raise UserError(None, f"--n {n}: need at least one image")
    if out is None:
        out = cache_dir() / f"synthetic_n{n}_s{seed}_{size}px_v{SYNTH_VERSION}.h5"
        if Path(out).exists():
            return Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(out)
    if out.is_dir():
        raise UserError(out, "is a folder, expected an .h5 file name")
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    with bar(total=n, desc=f"synthesizing {out.name}", unit="img") as pbar:
        synthesize(n, out, size=size, seed=seed, workers=workers, progress=lambda k: pbar.update(k - pbar.n))
    return out


def resolve_source(source: str, *, synthetic_n: int = DEFAULT_SYNTH_N, seed: int = DEFAULT_SEED) -> tuple[Path, str]:
    """Turn ``synthetic``, ``h5:PATH`` or ``astronn`` into (an .h5 path, a label for run names)."""
    kind, path = S.parse_source(source)
    if kind == "synthetic":
        return synth_file(synthetic_n, 256, seed), source_label(synthetic_n, seed)
    if kind == "h5":
        return path, path.name
    return S.astronn_file(), "astronn"


def prepare_dataset(
    source: str,
    out: str | Path,
    *,
    size: int = 128,
    seed: int = DEFAULT_SEED,
    synthetic_n: int = DEFAULT_SYNTH_N,
) -> D.PrepareResult:
    """Resolve the source and prepare it into ``out`` (a no-op when the content hash matches)."""
    path, label = resolve_source(source, synthetic_n=synthetic_n, seed=seed)
    src = S.validate_h5(path)
    with bar(total=src.n, desc=f"preparing {Path(out).name}", unit="img") as pbar:
        return D.prepare(path, out, size=size, seed=seed, progress=pbar.update, source_label=label)


@task(
    name="prepare-data",
    cache_key_fn=prepare_cache_key,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_io,
    persist_result=True,
)
def prepare_task(
    source: str, out: str, size: int = 128, seed: int = DEFAULT_SEED, synthetic_n: int = DEFAULT_SYNTH_N
) -> str:
    """Prepare a dataset folder and return its path."""
    from prefect import get_run_logger

    result = prepare_dataset(source, out, size=size, seed=seed, synthetic_n=synthetic_n)
    get_run_logger().info(
        "%s %s (key %s, %d images)", "reused" if result.cached else "prepared", result.out, result.key, result.meta["n"]
    )
    return str(result.out)
