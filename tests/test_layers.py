"""The pure layers import no Ray, torch, MLflow or Hydra (DESIGN.md, layers)."""

import subprocess
import sys

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
        "orchestrator.rungs",
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
