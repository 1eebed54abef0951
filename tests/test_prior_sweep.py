"""A sweep whose prior is an earlier sweep's MLflow experiment, end to end: real Ray, real MLflow
(SQLite in tmp), real torch training.

A first tiny sweep (FIFO: every trial runs its budget) records its curves in the experiment
``earlier``; a second sweep of the convergence scheduler with ``scheduler.prior=mlflow:earlier``
learns its prior from them before Ray starts, and its early-rung decisions say when the prior
cut a trial (a high ``prior_cut`` makes sure it is used on a sweep this small).
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from analysis.load import load_mlflow
from orchestrator.config import load_config
from orchestrator.sweep import run

pytestmark = pytest.mark.slow

TINY = ["debug=default", "report=false", "tracking.log_model=false", "trainable.epochs=3"]


def _sweep(name: str, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        composed = compose(config_name="config", overrides=[*TINY, f"name={name}", *overrides])
    cfg = load_config(OmegaConf.to_container(composed, resolve=True))
    return run(cfg, resolved_yaml=OmegaConf.to_yaml({"name": name}), overrides=tuple(overrides))


def test_a_prior_from_an_earlier_sweeps_mlflow_experiment_cuts_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _sweep("earlier", "scheduler=fifo", "num_samples=6", "tracking.experiment=earlier")
    later = _sweep(
        "later",
        "scheduler=convergence",
        "num_samples=9",
        "scheduler.prior=mlflow:earlier",
        "scheduler.prior_cut=0.6",
        "tracking.experiment=later",
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = load_mlflow(later.parent_run_id, uri)
    reasons = [t.decision_reason or "" for t in record.trials]
    by_prior = [r for r in reasons if r.startswith("prior at epoch")]
    assert by_prior, reasons
    assert all("by the prior from mlflow earlier" in r for r in by_prior)
