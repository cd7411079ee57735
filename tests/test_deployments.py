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


def test_stack_profile_switch_keeps_the_users_profile_and_gives_it_back(tmp_path, monkeypatch):
    """`stack.sh up` makes galaxy-local active (twice: the second `up` must not record galaxy-local as the
    previous one); `down` gives back what was active, and Prefect itself reads the file."""
    import subprocess
    import sys

    import tomllib
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "prefect"
    home.mkdir()
    (home / "profiles.toml").write_text('active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "http://x:1/api"\n')
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    previous = tmp_path / "previous_profile"

    def script(*args):
        run = subprocess.run([sys.executable, str(ROOT / "scripts" / "prefect_profile.py"), *args], capture_output=True)
        assert run.returncode == 0, run.stderr

    for port in (4200, 4300):  # up, up again on another port
        script("use", "galaxy-local", str(previous), f"PREFECT_API_URL=http://127.0.0.1:{port}/api")
    data = tomllib.loads((home / "profiles.toml").read_text())
    assert data["active"] == "galaxy-local" and previous.read_text().strip() == "mine"
    assert data["profiles"]["galaxy-local"] == {"PREFECT_API_URL": "http://127.0.0.1:4300/api"}
    assert data["profiles"]["mine"] == {"PREFECT_API_URL": "http://x:1/api"}  # the user's profile untouched
    from prefect.settings.profiles import _read_profiles_from  # how Prefect reads the file

    profiles = _read_profiles_from(home / "profiles.toml")
    assert profiles.active_name == "galaxy-local"
    assert str(profiles["galaxy-local"].settings[PREFECT_API_URL]) == "http://127.0.0.1:4300/api"
    script("restore", str(previous))
    assert tomllib.loads((home / "profiles.toml").read_text())["active"] == "mine"
