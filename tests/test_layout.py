"""The fixed layout: model/ is framework-free, dependencies point flows -> tasks -> model, mlflow/ is no package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"prefect", "mlflow", "optuna"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_never_imports_frameworks_or_upper_layers():
    for path in (ROOT / "model").rglob("*.py"):
        bad = imported_roots(path) & (FRAMEWORKS | {"tasks", "flows", "cli"})
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_tasks_never_import_flows_or_cli():
    for path in (ROOT / "tasks").rglob("*.py"):
        bad = imported_roots(path) & {"flows", "cli"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_importing_all_of_model_loads_no_framework():
    modules = sorted(p.stem for p in (ROOT / "model").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('model.' + m)\n"
        f"print(sorted(set(k.split('.')[0] for k in sys.modules) & set({sorted(FRAMEWORKS)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mlflow_folder_is_not_a_package():
    assert (ROOT / "mlflow").is_dir()
    assert not (ROOT / "mlflow" / "__init__.py").exists()
    import mlflow

    assert Path(mlflow.__file__).parent != ROOT / "mlflow"
