"""The pure layers import no Ray, torch, MLflow or Hydra (DESIGN.md, layers)."""

import subprocess
import sys

import pytest

HEAVY = ("ray", "torch", "mlflow", "hydra", "omegaconf")


@pytest.mark.parametrize(
    "module",
    [
        "analysis.convergence",
        "analysis.curves",
        "analysis.records",
        "analysis.report",
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
    ],
)
def test_pure_modules_import_nothing_heavy(module):
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
