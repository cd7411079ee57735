"""The fixed layout: model/ is framework-free, dependencies point flows -> tasks -> model, mlflow/ is no package."""

from __future__ import annotations

import ast
import re
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
    modules = sorted(module_name(p) for p in (ROOT / "model").rglob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(set(k.split('.')[0] for k in sys.modules) & set({sorted(FRAMEWORKS)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mlflow_folder_is_not_a_package():
    assert (ROOT / "mlflow").is_dir()
    assert not (ROOT / "mlflow" / "__init__.py").exists()
    import mlflow

    assert Path(mlflow.__file__).parent != ROOT / "mlflow"


# ---------------------------------------------------------------------------------------------- shape of the house

PACKAGES = ("model", "tasks", "flows", "cli")
STAGES = ("vqvae", "prior", "samples", "atlas", "judge", "evaluate", "sweep", "data", "realism")


def module_name(path: Path) -> str:
    """model/plotting/atlas.py -> model.plotting.atlas; model/plotting/__init__.py -> model.plotting."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def project_imports(path: Path) -> set[str]:
    """Project modules a file imports (``from a.b import c`` counts a.b and a.b.c when that is a module)."""
    known = {module_name(p) for p in project_files()}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return out


def test_no_module_outgrows_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in project_files() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over 450 lines (two concerns in one file?): {long}"


def test_no_import_cycles():
    graph = {module_name(p): project_imports(p) - {module_name(p)} for p in project_files()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(
                    f"import cycle: {' -> '.join(path[path.index(nxt) :] + [nxt]) if nxt in path else nxt}"
                )
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_stages_do_not_import_each_other():
    for stage in STAGES:
        path = ROOT / "tasks" / f"{stage}.py"
        others = {f"tasks.{s}" for s in STAGES if s != stage}
        bad = project_imports(path) & others
        assert not bad, f"tasks/{stage}.py imports the stages {bad}"


def test_no_optuna_internals_and_no_cli_flags_in_the_library():
    for path in project_files():
        text = path.read_text()
        for needle in ("optuna.Trial(", "set_trial_state_values", "._storage"):
            assert needle not in text, f"{path.relative_to(ROOT)} uses Optuna internals ({needle})"
    for path in (ROOT / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(r"--[a-z]", node.value):
                raise AssertionError(f"{path.relative_to(ROOT)} names a CLI flag: {node.value!r}")


def test_the_command_line_imports_no_framework_until_a_command_runs():
    code = (
        "import sys, cli.main\n"
        "heavy = ('torch', 'mlflow', 'prefect', 'optuna', 'matplotlib', 'galsim', 'h5py', 'scipy', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # `galaxy --help` and argument errors stay instant


def test_no_script_shadows_a_standard_module():
    # `python scripts/x.py` puts scripts/ first on sys.path (gpu_check.py adds benchmarks/ too): a scripts/profile.py
    # was imported by torch's `import cProfile` in place of the standard `profile`, and the GPU check died there
    clashes = [
        f"{folder}/{path.name}"
        for folder in ("scripts", "benchmarks")
        for path in (ROOT / folder).glob("*.py")
        if path.stem in sys.stdlib_module_names
    ]
    assert not clashes, f"these shadow standard modules when run as scripts: {clashes}"
