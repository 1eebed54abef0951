"""The function Ray runs for each trial, importable without importing torch.

The driver hands :func:`train` to the Tuner; torch, the user's code and the built-in
trainables load only in the workers (:mod:`orchestrator.runner`), which keeps the driver small.
"""

from __future__ import annotations

from typing import Any


def train(config: dict[str, Any]) -> None:
    """Run :func:`orchestrator.runner.run_trial` in this worker."""
    from orchestrator.runner import run_trial

    run_trial(config)
