"""The pipeline's closing Prefect artifact: key metrics per stage with links to MLflow runs and models."""

from __future__ import annotations

import os

import mlflow
from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks import tracking


def mlflow_ui() -> str:
    """Base URL of the MLflow UI the links point to ($GALAXY_MLFLOW_UI, default the local stack's)."""
    return os.environ.get("GALAXY_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")


def run_link(run_id: str) -> str:
    run = mlflow.get_run(run_id)
    return f"[{run.info.run_name}]({mlflow_ui()}/#/experiments/{run.info.experiment_id}/runs/{run_id})"


def model_link(model_uri: str) -> str:
    name, _, version = model_uri.removeprefix("models:/").partition("/")
    return f"[{model_uri}]({mlflow_ui()}/#/models/{name}/versions/{version})" if version else model_uri


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_text(metrics: dict) -> str:
    """'name value' pairs; a number with ``name_lo`` / ``name_hi`` beside it is shown as 'name value [lo, hi]'."""
    bounds = {k for k in metrics if f"{k}_lo" in metrics and f"{k}_hi" in metrics}
    hidden = {f"{k}{end}" for k in bounds for end in ("_lo", "_hi")}
    parts = []
    for key, value in metrics.items():
        if key in hidden:
            continue
        interval = f" [{_fmt(metrics[f'{key}_lo'])}, {_fmt(metrics[f'{key}_hi'])}]" if key in bounds else ""
        parts.append(f"{key} {_fmt(value)}{interval}")
    return ", ".join(parts)


def summary_markdown(results: dict) -> str:
    """A markdown table: stage, MLflow run, registered model, key metrics."""
    tracking.setup()
    lines = [
        "# Galaxy pipeline summary",
        "",
        "| stage | MLflow run | registered model | key metrics |",
        "|---|---|---|---|",
    ]
    for stage, result in results.items():
        if not isinstance(result, dict):
            continue
        run = run_link(result["run_id"]) if result.get("run_id") else ""
        model = model_link(result["model_uri"]) if result.get("model_uri") else ""
        metrics = metrics_text(result.get("metrics") or {})
        if stage == "data":
            metrics = f"prepared folder `{result['data_dir']}`"
        lines.append(f"| {stage} | {run} | {model} | {metrics} |")
    lines += ["", f"Tracking store: `{tracking.tracking_uri()}`; UI: {mlflow_ui()}"]
    return "\n".join(lines)


@task(name="publish-summary")
def publish_summary(results: dict) -> str:
    """Publish the summary table as a Prefect markdown artifact (key 'galaxy-summary') and return it."""
    markdown = summary_markdown(results)
    create_markdown_artifact(
        markdown=markdown, key="galaxy-summary", description="Key metrics and links of this pipeline run"
    )
    return markdown
