"""Realism stage: the report of a synthetic Galaxy10-format file against real images (``model.realism``).

The CLI (`galaxy data realism`) calls ``realism_report``; a flow calls ``realism_task``. Both write the report
into a folder and, when MLFLOW_TRACKING_URI is set, log it as a run in the experiment ``galaxy-data``:
metrics ``realism_auc``, ``realism_auc_sd``, ``realism_auc_<statistic>`` and the real and synthetic medians
``realism_real_<statistic>`` / ``realism_synthetic_<statistic>``; the JSON, CSV tables and figures under
``realism/``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from prefect import task

from model.realism import RealismReport, compare, measure_file, write_report
from model.source import validate_h5
from tasks import tracking
from tasks.cache import stage_cache_key
from tasks.progress import bar

EXPERIMENT = "galaxy-data"
DEFAULT_LIMIT = 2000  # images measured per file
DEFAULT_SIZE = 128  # the common side both files are resized to (that of `galaxy data prepare`)


@dataclass(frozen=True)
class RealismResult:
    """What a realism report found, where it lies, and its MLflow run (None when no tracking URI is set)."""

    out: str
    auc: float
    auc_sd: float
    worst: str
    worst_auc: float
    n_real: int
    n_synthetic: int
    run_id: str | None
    table: str
    last_line: str
    note: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """{run_id, metrics} as the pipeline summary lists a stage."""
        return {"run_id": self.run_id, "metrics": {"realism_auc": self.auc, "realism_auc_sd": self.auc_sd}}


def report_metrics(report: RealismReport) -> dict[str, float]:
    """The run's metrics (finite values only): the two-sample AUC, and per statistic its AUC and medians."""
    metrics = {"realism_auc": report.auc, "realism_auc_sd": report.auc_sd}
    for name, row in report.statistics.items():
        metrics[f"realism_auc_{name}"] = row["auc"]
        metrics[f"realism_real_{name}"] = row["real"]["median"]
        metrics[f"realism_synthetic_{name}"] = row["synthetic"]["median"]
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def realism_report(
    real: str | Path,
    synthetic: str | Path,
    out: str | Path,
    *,
    size: int = DEFAULT_SIZE,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = 0,
    log: bool | None = None,
) -> RealismResult:
    """Measure both files, compare them, write the report into ``out``; log it to MLflow when ``log`` (None: when
    a tracking URI is set, as the command line does; the pipeline always logs)."""
    # both files checked before either is measured: a bad one fails at once
    sources = [validate_h5(path, require_labels=False) for path in (real, synthetic)]
    measured = []
    for src, role in zip(sources, ("real", "synthetic")):
        total = src.n if limit is None else min(src.n, limit)
        with bar(total=total, desc=f"measuring {role} {src.path.name}", unit="img") as pbar:
            measured.append(measure_file(src.path, size=size, limit=limit, progress=pbar.update))
    real_m, synthetic_m = measured
    report = compare(real_m, synthetic_m, seed=seed)
    report.settings.update(size=size, limit=limit, real=str(real_m.path), synthetic=str(synthetic_m.path))
    files = write_report(report, real_m, synthetic_m, out)
    metrics = report_metrics(report)
    run_id = None
    if log or (log is None and os.environ.get("MLFLOW_TRACKING_URI")):
        run_id = log_report(report, metrics, files)
    worst, worst_auc = report.worst
    return RealismResult(
        out=str(out),
        auc=report.auc,
        auc_sd=report.auc_sd,
        worst=worst,
        worst_auc=worst_auc,
        n_real=report.n_real,
        n_synthetic=report.n_synthetic,
        run_id=run_id,
        table=report.table(),
        last_line=report.last_line(),
        note=report.note,
        metrics=metrics,
    )


def log_report(report: RealismReport, metrics: dict[str, float], files: list[Path]) -> str:
    """One run in ``galaxy-data``: settings as params, the metrics, the written files as artifacts; its id."""
    settings = report.settings
    tags = tracking.base_tags(
        None,
        stage="realism",
        synthetic="true",
        real_file=settings["real"],
        synthetic_file=settings["synthetic"],
    )
    with tracking.run(EXPERIMENT, tracking.run_name("realism", {"synthetic": True}), tags) as active:
        mlflow.log_params({**tracking.flatten(settings), "n_real": report.n_real, "n_synthetic": report.n_synthetic})
        mlflow.log_metrics(metrics)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="realism")
        return active.info.run_id


@task(name="realism-report", persist_result=True, cache_key_fn=stage_cache_key)  # a rerun logs no second report
def realism_task(
    real: str,
    synthetic: str,
    out: str,
    size: int = DEFAULT_SIZE,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = 0,
) -> RealismResult:
    """The realism report of ``synthetic`` against ``real`` in ``out``, logged to MLflow."""
    from prefect import get_run_logger

    result = realism_report(real, synthetic, out, size=size, limit=limit, seed=seed, log=True)
    get_run_logger().info(result.last_line)
    return result
