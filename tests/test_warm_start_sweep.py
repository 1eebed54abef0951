"""A warm-started sweep end to end: real Ray, real MLflow (SQLite in tmp), real torch training.

A tiny sweep writes checkpoints; the same one-trial sweep then runs cold and warm-started
(``trainable.init_from=<the first sweep's trial directory>``): the same configuration and seed,
and the warm one's first epoch is better; its MLflow trial run carries ``init_from`` and the
counts of tensors loaded and skipped. A study that runs both (``warm_start`` searched) has a warm
and a cold trial, and its report compares them.
"""

from __future__ import annotations

import glob
import os

import pytest
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from analysis.load import load_mlflow
from analysis.records import parse_value
from analysis.report import build
from orchestrator.config import load_config
from orchestrator.sweep import run

pytestmark = pytest.mark.slow

#: One MLP architecture (so every tensor of the checkpoint fits), Adam, FIFO (no early stop).
TINY = [
    "debug=default",
    "scheduler=fifo",
    "num_samples=1",
    "report=false",
    "tracking.log_model=false",
    "trainable.hparams.optimizer=adam",
    "trainable.hparams.hidden_layers=2",
    "trainable.hparams.width=64",
    "trainable.hparams.batch_norm=false",
    "trainable.hparams.dropout=0.0",
]


def _sweep(name: str, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        composed = compose(config_name="config", overrides=[*TINY, f"name={name}", *overrides])
    cfg = load_config(OmegaConf.to_container(composed, resolve=True))
    return run(cfg, resolved_yaml=OmegaConf.to_yaml({"name": name}), overrides=tuple(overrides))


def _first_epoch(client: MlflowClient, summary) -> tuple[dict, dict[str, float]]:
    """The only trial run's tags and params, and its first epoch's metrics."""
    run_ = client.get_run(summary.best_run_id)
    first = {
        key: next(m.value for m in client.get_metric_history(run_.info.run_id, key) if m.step == 1)
        for key in ("val_loss", "val_acc", "seed")
    }
    return {**run_.data.tags, **run_.data.params}, first | {
        k: v for k, v in run_.data.metrics.items() if k.startswith("init_")
    }


def test_a_warm_started_trial_beats_the_same_cold_one_at_its_first_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    earlier = _sweep("pretrain", "trainable.epochs=6")
    (trial_dir,) = glob.glob(os.path.join(earlier.results_dir, "trial_*"))
    assert glob.glob(os.path.join(trial_dir, "checkpoint_*", "checkpoint.pt"))

    cold = _sweep("cold", "trainable.epochs=2")
    warm = _sweep("warm", "trainable.epochs=2", f"trainable.init_from={trial_dir}")

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    cold_tags, cold_first = _first_epoch(client, cold)
    warm_tags, warm_first = _first_epoch(client, warm)
    same = ("lr", "optimizer", "width", "hidden_layers", "batch_size")
    assert {k: cold_tags[k] for k in same} == {k: warm_tags[k] for k in same}
    assert cold_first["seed"] == warm_first["seed"]
    assert warm_first["val_loss"] < cold_first["val_loss"]
    assert warm_first["val_acc"] > cold_first["val_acc"]
    assert warm_tags["init_from"] == trial_dir and "init_from" not in cold_tags
    assert warm_first["init_loaded"] == 6 and warm_first["init_skipped"] == 0
    parent = client.get_run(warm.parent_run_id)
    assert parent.data.params["init_from"] == trial_dir


def test_a_study_that_runs_both_reports_warm_against_cold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    earlier = _sweep("pretrain", "trainable.epochs=6")
    (trial_dir,) = glob.glob(os.path.join(earlier.results_dir, "trial_*"))
    fixed = ["trainable.hparams.lr=0.003", "trainable.hparams.batch_size=32",
             "trainable.hparams.activation=relu", "trainable.hparams.weight_decay=0.0"]
    both = _sweep("both", *fixed, "search=grid", "num_samples=2", "trainable.epochs=4",
                  f"trainable.init_from={trial_dir}",
                  "+trainable.hparams.warm_start={type:choice,values:[true,false]}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = load_mlflow(both.parent_run_id, uri)
    by_start = {t.params["warm_start"]: t for t in record.trials}
    assert set(by_start) == {True, False}
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_run(both.parent_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{both.parent_run_id}'",
    )
    tags = {parse_value(r.data.params["warm_start"]): r.data.tags for r in runs}
    assert tags[True]["init_from"] == trial_dir and "init_from" not in tags[False]
    first = {k: t.attempts[0].series["val_acc"][0] for k, t in by_start.items()}
    assert first[True] > first[False]
    (table,) = [t for t in build(record, with_importance=False).tables() if "warm start" in t.title]
    assert [row[:2] for row in table.rows] == [("cold", 1), ("warm", 1)]
