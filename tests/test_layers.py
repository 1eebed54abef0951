"""The pure layers import no Ray, torch, MLflow or Hydra (DESIGN.md, layers)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("ray", "torch", "mlflow", "hydra", "omegaconf")


@pytest.mark.parametrize(
    "module",
    [
        "analysis.convergence",
        "analysis.verdict",
        "analysis.extrapolation",
        "analysis.plateau",
        "analysis.curves",
        "analysis.records",
        "analysis.report",
        "analysis.stats",
        "analysis.tables",
        "analysis.importance",
        "analysis.load",
        "orchestrator.policy",
        "orchestrator.policy.config",
        "orchestrator.policy.decision",
        "orchestrator.policy.engine",
        "orchestrator.policy.rules",
        "orchestrator.policy.rungs",
        "orchestrator.policy.settings",
        "orchestrator.policy.state",
        "orchestrator.policy.trial",
        "orchestrator.seeding",
        "trainables.hparams",
        "trainables.formats",
    ],
)
def test_pure_modules_import_nothing_heavy(module):
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


CURVE_ANALYSIS = ("analysis.verdict", "analysis.plateau", "analysis.extrapolation", "analysis.convergence")


@pytest.mark.parametrize("module", CURVE_ANALYSIS)
def test_the_curve_analysis_imports_only_numpy_and_the_stdlib(module):
    """DESIGN.md: analysis/convergence.py and its split files may import numpy and the stdlib only."""
    code = (
        f"import sys, numpy; before = set(sys.modules); import {module}; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new - set(sys.stdlib_module_names) - {'numpy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['analysis']", out.stdout


@pytest.mark.parametrize("module", ["orchestrator.tracking", "orchestrator.tracking.uri"])
def test_the_tracking_package_and_its_uri_parser_import_nothing_heavy(module):
    """The package imports its names on first use: the preflight parses a URI without loading MLflow."""
    test_pure_modules_import_nothing_heavy(module)


def test_only_the_tracking_package_imports_mlflow():
    """Under orchestrator/ and trainables/, every ``import mlflow...`` is in orchestrator/tracking/."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted([*root.glob("orchestrator/**/*.py"), *root.glob("trainables/**/*.py")]):
        if path.is_relative_to(root / "orchestrator" / "tracking"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
    assert (root / "orchestrator" / "tracking" / "tracker.py").is_file()  # the scan looked at the right tree


DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"
PACKAGES = ("orchestrator", "analysis", "trainables")


def _module_map() -> dict[str, set[str]]:
    """docs/DESIGN.md's module map: module path -> the imports it may make besides the stdlib."""
    rows = {}
    for line in DESIGN.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`").endswith(".py"):
            allowed = {name.strip("` ") for name in cells[2].split(",") if name.strip("` ") != "stdlib"}
            rows[cells[0].strip("`")] = allowed
    return rows


def _imports(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports (at any depth, relative ones resolved), stdlib left out."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found |= {f"{base}.{a.name}" for a in node.names} if base in _packages(root) else {base}
    return {name for name in found if name.split(".")[0] not in sys.stdlib_module_names}


def _packages(root: Path) -> set[str]:
    """Dotted names of the project's packages (a ``from pkg import module`` names a module)."""
    return {".".join(p.relative_to(root).parent.parts) for p in root.glob("*/**/__init__.py")}


def test_the_module_map_lists_every_module_and_its_imports_hold():
    """docs/DESIGN.md has one line per module of orchestrator/, analysis/, trainables/, and every
    import a module makes is allowed by its line: a name allows itself and what lies under it."""
    root = DESIGN.parents[1]
    table = _module_map()
    files = sorted(str(p.relative_to(root)) for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))
    assert sorted(table) == files, "docs/DESIGN.md must list exactly the modules there are"
    wrong = []
    for name in files:
        allowed = table[name]
        for imported in sorted(_imports(root / name, root)):
            if not any(imported == a or imported.startswith(a + ".") for a in allowed):
                wrong.append(f"{name} imports {imported}")
    assert wrong == [], "imports the module map does not allow"


def test_no_module_over_350_lines_and_no_function_over_60():
    """DESIGN.md: one concept per module, 50-300 lines (never over 350), functions under 60 lines."""
    root = DESIGN.parents[1]
    too_long = []
    for path in sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 350:
            too_long.append(f"{path.relative_to(root)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    too_long.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert too_long == []
