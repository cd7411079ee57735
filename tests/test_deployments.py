"""prefect.yaml: every deployment runs the `galaxy` flow with parameters that PipelineConfig takes as written.

PipelineConfig ignores keys it does not know (pydantic's default), so a misspelt key in prefect.yaml would
silently run with the default instead: every key must be a field.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from flows.pipeline import PipelineConfig, galaxy

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def test_every_deployment_is_listed():
    assert [d["name"] for d in DEPLOYMENTS] == ["full", "sweep", "data", "article"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_parameters_are_a_valid_pipeline_config(deployment):
    module, name = deployment["entrypoint"].split(":")
    assert (ROOT / module).is_file() and name == galaxy.fn.__name__ and module == "flows/pipeline.py"
    parameters = deployment.get("parameters") or {}
    assert set(parameters) <= set(inspect.signature(galaxy.fn).parameters), parameters
    config = parameters.get("config", {})
    unknown = sorted(set(config) - set(PipelineConfig.model_fields))
    assert not unknown, f"deployment {deployment['name']!r}: {unknown} are not PipelineConfig fields"
    validated = PipelineConfig.model_validate(config)  # types, ranges and stage names
    assert validated.model_dump(include=set(config)) == config
