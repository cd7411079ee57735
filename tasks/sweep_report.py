"""What a finished sweep leaves on its parent MLflow run: results table, A6 figures, best trial, registered model.

``summarise`` runs inside the active parent run: it logs ``sweep/results.csv`` (one row per trial), the
metrics table and MSE figures, the best trial (params ``best.*``, metric ``best_val_mse``, tag
``best_trial_run_id``) and the A6 reconstructions across D (fixed K) and across K (fixed D), then registers
the best trial's logged model as ``galaxy-vqvae`` (alias ``champion`` when it beats the current one).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import mlflow
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from model.checkpoint import load_model
from model.data import PreparedData
from model.errors import UserError
from model.plotting.grids import comparison_figure
from model.plotting.sweep import best_per_value, sweep_mse_figure, sweep_table_figure
from model.train_vqvae import reconstruct_images
from model.vqvae import VQVAE
from tasks import registry, tracking
from tasks.champion import ChampionRule
from tasks.sweep_space import describe

A6_IMAGES = 8  # validation images shown in the A6 reconstruction figures


@dataclass(frozen=True)
class SweepResult:
    """What a sweep hands on: its parent run, study, best trial and the registered best model."""

    parent_run_id: str
    study_name: str
    best_params: dict[str, Any]
    best_value: float  # validation MSE of the best trial
    model_uri: str  # models:/galaxy-vqvae/<version>
    version: str
    best_run_id: str = ""  # the best trial's own MLflow run
    counts: dict[str, int] = field(default_factory=dict)  # trials by final state (COMPLETE, PRUNED, FAIL, ...)


def results_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One plain row per trial (COMPLETE by MSE first, then PRUNED, then the rest): choices, state, metrics."""
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}

    def key(t: FrozenTrial) -> tuple:
        return order.get(t.state, 2), t.value if t.value is not None else float("inf"), t.number

    rows = []
    for t in sorted(trials, key=key):
        a, p = t.user_attrs, t.params
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "codebook_size": p.get("codebook_size"),
                "embedding_dim": p.get("embedding_dim"),
                "quantizer": p.get("quantizer"),
                "anti_collapse": p.get("anti_collapse"),
                "cosine_sim": p.get("cosine_sim"),
                "options": describe(p, sizes=False) if "codebook_size" in p else "",
                "epochs_done": a.get("epochs_done"),
                "val_mse": t.value,
                "val_psnr": a.get("val_psnr"),
                "val_utilisation": a.get("val_utilisation"),
                "val_perplexity": a.get("val_perplexity"),
                "val_effective_usage": a.get("val_effective_usage"),
                "retry_of": a.get("retry_of"),
                "mlflow_run_id": a.get("mlflow_run_id"),
            }
        )
    return rows


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def trial_reconstructions(run_id: str, originals: np.ndarray) -> np.ndarray:
    """Reconstruct ``originals`` (n, S, S, 3) uint8 with the checkpoint a trial's run logged."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoint/checkpoint.pt", dst_path=tmp
        )
        model, _ = load_model(path, VQVAE)
    return reconstruct_images(model, originals, device="cpu")


def log_a6_figures(rows: Sequence[dict[str, Any]], originals: np.ndarray) -> None:
    """Reconstructions of the same images across embedding dims (fixed K) and across codebook sizes (fixed D)."""
    cache: dict[str, np.ndarray] = {}

    def column(r: dict[str, Any], symbol: str, key: str) -> tuple[str, np.ndarray]:
        if r["mlflow_run_id"] not in cache:
            cache[r["mlflow_run_id"]] = trial_reconstructions(r["mlflow_run_id"], originals)
        psnr = f"\nval PSNR {r['val_psnr']:.1f} dB" if r["val_psnr"] is not None else ""
        return f"{symbol} = {r[key]}\ntrial {r['trial']}: {r['options']}{psnr}", cache[r["mlflow_run_id"]]

    n = len(originals)
    comparisons = (
        ("embedding_dim", "codebook_size", "D", "embedding dims D", "codebook size K", "dim"),
        ("codebook_size", "embedding_dim", "K", "codebook sizes K", "embedding dim D", "size"),
    )
    for vary, fixed, symbol, across, at, name in comparisons:
        value, chosen = best_per_value(rows, vary=vary, fixed=fixed)
        if chosen:
            title = f"Reconstructions across {across} ({at} = {value}); same {n} validation images"
            columns = [column(r, symbol, vary) for r in chosen]
            tracking.log_figure(comparison_figure(columns, originals, title), f"sweep/reconstructions_by_{name}.png")


def register_best(study: optuna.Study, best: FrozenTrial, parent_run_id: str) -> str:
    """Register the model the best trial's run already logged; champion when it beats the current one."""
    mv = mlflow.register_model(best.user_attrs["model_uri"], registry.VQVAE_MODEL)
    client = mlflow.MlflowClient()
    tags = {"sweep_study": study.study_name, "sweep_parent_run_id": parent_run_id, "sweep_trial": str(best.number)}
    for key, value in tags.items():
        client.set_model_version_tag(registry.VQVAE_MODEL, mv.version, key, value)
    rule = ChampionRule("final_val_mse", best.value, higher_is_better=False, scope_tag="data_key")
    registry.promote(registry.VQVAE_MODEL, str(mv.version), rule)
    mlflow.set_tag("registered_model", f"{registry.VQVAE_MODEL}/{mv.version}")
    return str(mv.version)


def summarise(study: optuna.Study, data: PreparedData, parent_run_id: str) -> SweepResult:
    """In the active parent run: results table and figures, best trial, registered best model."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    mlflow.log_metrics({f"n_{s.lower()}": counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")})
    for t in trials:
        if t.value is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            mlflow.log_metric("trial_val_mse", t.value, step=t.number)
    rows = results_rows(trials)
    mlflow.log_text(results_csv(rows), "sweep/results.csv")
    tag = " (synthetic data)" if data.synthetic else ""
    name = study.study_name
    tracking.log_figure(
        sweep_table_figure(rows, f"Sweep {name}: validation metrics per trial{tag}"), "sweep/metrics_table.png"
    )
    tracking.log_figure(sweep_mse_figure(rows, f"Sweep {name}: validation MSE{tag}"), "sweep/mse_by_size.png")
    if not counts.get("COMPLETE"):
        raise UserError(f"sweep {name}", f"no trial completed ({dict(counts)}); see MLflow run {parent_run_id}")

    best = study.best_trial
    best_run = best.user_attrs["mlflow_run_id"]
    mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
    best_metrics = {f"best_{k}": v for k, v in best.user_attrs.items() if k.startswith("val_") and v is not None}
    mlflow.log_metrics({"best_val_mse": best.value, **best_metrics})
    mlflow.set_tags(
        {"best_trial_run_id": best_run, "best_trial_number": str(best.number), "best_trial": describe(best.params)}
    )
    originals, _ = data.subset("val", A6_IMAGES)
    log_a6_figures(rows, originals)
    version = register_best(study, best, parent_run_id)
    model_uri = f"models:/{registry.VQVAE_MODEL}/{version}"
    return SweepResult(
        parent_run_id, name, dict(best.params), float(best.value), model_uri, version, best_run, dict(counts)
    )
