"""Sweep figures (SPEC A6): the trials table and validation MSE by codebook size and embedding dim.

A sweep row is a dict with ``trial`` (number), ``state`` ("COMPLETE", "PRUNED", "FAIL", ...),
``codebook_size`` (K), ``embedding_dim`` (D), ``options`` (quantizer options as text), ``epochs_done``,
``val_mse`` (None when the trial reported none) and optionally ``val_psnr``, ``val_utilisation``,
``val_perplexity``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from model.plotting.grids import metrics_table_figure

TABLE_COLUMNS = (
    "trial",
    "state",
    "codebook size K",
    "embedding dim D",
    "quantizer options",
    "val MSE",
    "PSNR (dB)",
    "utilisation (%)",
    "perplexity",
)


def sweep_table_figure(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """The A6 metrics table: one line per trial, in the order given."""

    def cell(v: Any) -> Any:
        return "" if v is None else v

    lines = [
        {
            "trial": r["trial"],
            "state": r["state"].lower() + (f" @ epoch {r['epochs_done']}" if r["state"] == "PRUNED" else ""),
            "codebook size K": r["codebook_size"],
            "embedding dim D": r["embedding_dim"],
            "quantizer options": r["options"],
            "val MSE": r["val_mse"],
            "PSNR (dB)": r.get("val_psnr"),
            "utilisation (%)": None if r.get("val_utilisation") is None else 100.0 * r["val_utilisation"],
            "perplexity": r.get("val_perplexity"),
        }
        for r in rows
    ]
    return metrics_table_figure([{k: cell(v) for k, v in line.items()} for line in lines], TABLE_COLUMNS, title=title)


def _scored(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["val_mse"] is not None]


def sweep_mse_figure(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """Validation MSE against codebook size (one series per embedding dim) and against trial number; pruned
    trials show the MSE of their last reported epoch."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_size, ax_trial = fig.subplots(1, 2)
    scored = _scored(rows)
    dims = sorted({r["embedding_dim"] for r in scored})
    for i, d in enumerate(dims):
        for state, marker, note in (("COMPLETE", "o", ""), ("PRUNED", "x", " (pruned, last epoch reported)")):
            mine = [r for r in scored if r["embedding_dim"] == d and r["state"] == state]
            pts = sorted((r["codebook_size"], r["val_mse"]) for r in mine)
            if pts:
                ax_size.plot(*zip(*pts), marker, color=f"C{i % 10}", label=f"D = {d}{note}", linestyle="none")
    sizes = sorted({r["codebook_size"] for r in scored})
    ax_size.set_xscale("log", base=2)
    if sizes:
        ax_size.set_xticks(sizes, [str(k) for k in sizes])
        ax_size.minorticks_off()
    ax_size.set_xlabel("codebook size K")
    ax_size.set_ylabel("validation MSE (images in [-1, 1])")
    ax_size.set_title("By codebook size and embedding dim D")
    for state, marker, colour in (("COMPLETE", "o", "C0"), ("PRUNED", "x", "C3")):
        pts = [(r["trial"], r["val_mse"]) for r in scored if r["state"] == state]
        if pts:
            ax_trial.plot(*zip(*pts), marker, color=colour, label=state.lower(), linestyle="none")
    complete = sorted((r["trial"], r["val_mse"]) for r in scored if r["state"] == "COMPLETE")
    if complete:
        best = list(np.minimum.accumulate([v for _, v in complete]))
        last = max(r["trial"] for r in scored)  # carry the best value on to the last trial
        ax_trial.step([n for n, _ in complete] + [last], best + best[-1:], where="post", color="k", label="best so far")
    ax_trial.set_xlabel("trial number")
    ax_trial.set_ylabel("validation MSE")
    ax_trial.set_title("By trial")
    for ax in (ax_size, ax_trial):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return fig


def best_per_value(rows: Sequence[dict[str, Any]], vary: str, fixed: str) -> tuple[Any, list[dict[str, Any]]]:
    """For an A6 comparison: the value of ``fixed`` met with the most distinct values of ``vary`` among COMPLETE
    rows (ties: the lower best MSE), and the lowest-MSE row for each value of ``vary`` there, ``vary`` ascending.
    (None, []) when no row is COMPLETE."""
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["val_mse"] is not None]
    groups: dict[Any, dict[Any, dict[str, Any]]] = {}
    for r in sorted(complete, key=lambda r: r["val_mse"]):
        groups.setdefault(r[fixed], {}).setdefault(r[vary], r)  # first seen = lowest MSE
    if not groups:
        return None, []
    chosen = min(groups, key=lambda g: (-len(groups[g]), min(r["val_mse"] for r in groups[g].values())))
    return chosen, [groups[chosen][v] for v in sorted(groups[chosen])]
