"""End-to-end sweeps with real Ray, a real MLflow store and real PyTorch training."""

import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import ray
import torch
from conftest import run_cli, start_cli
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from analysis.convergence import convergence_epoch
from analysis.load import load_mlflow, load_ray_dir
from analysis.report import build
from orchestrator.config import load_config
from orchestrator.contract import CHECKPOINT_FILE
from orchestrator.entry import train
from orchestrator.schema import DataConfig, SweepConfig, TrainableConfig
from orchestrator.sweep import run
from orchestrator.trials import run_settings

pytestmark = pytest.mark.slow


def _config(overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def _index(summary, trial_id):
    """The searcher's index of a trial (the ``trial_<index>_<id>`` name of its directory)."""
    (path,) = glob.glob(os.path.join(summary.results_dir, f"trial_*_{trial_id}"))
    return int(os.path.basename(path).split("_")[1])


def _children(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_debug_sweep_records_every_trial_under_the_parent_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _config(["debug=default", "scheduler=asha"])
    summary = run(cfg, resolved_yaml=OmegaConf.to_yaml({"name": cfg.name}), overrides=("debug=default",))

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert summary.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "debug"
    assert parent.data.metrics["trials"] == cfg.num_samples
    assert parent.data.params["search"] == "tpe"
    note = parent.data.tags["mlflow.note.content"]  # the run's description: the summary in Markdown
    assert f"**{summary.best_value:.4f}**" in note and f"{summary.best_value:.4f}" in summary.render()
    for status, count in summary.statuses.items():
        assert f"| {status} | {count} |" in note
    assert os.path.join(summary.results_dir, "report", "report.md") in note
    assert summary.report == os.path.join(summary.results_dir, "report", "report.md")
    children = _children(client, summary.parent_run_id)
    assert len(children) == cfg.num_samples == sum(summary.statuses.values())
    for child in children:
        assert child.info.status == "FINISHED"
        epochs = int(child.data.tags["epochs_run"])
        assert child.data.tags["final_status"] in ("COMPLETED", "STOPPED_EARLY")
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, epochs + 1))
        for key in ("train_loss", "val_loss", "grad_norm", "dead_frac", "lr"):
            assert len(client.get_metric_history(child.info.run_id, key)) == epochs, key
        for key in ("seed", "attempt", "params"):  # an attempt's constants: at its first epoch
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1], key
        assert "lr" in child.data.params and "run" not in child.data.params
    best = client.get_run(summary.best_run_id)
    assert best.data.tags["mlflow.parentRunId"] == summary.parent_run_id
    assert best.data.metrics["val_acc"] == pytest.approx(summary.best_value, abs=1e-12)
    assert summary.best_value == max(c.data.metrics["val_acc"] for c in children)
    assert os.path.isdir(summary.results_dir)
    assert not ray.is_initialized()
    # the best trial's model, logged with a signature, predicts the 10 digit classes
    import mlflow.pytorch

    mlflow.set_tracking_uri(summary.tracking_uri)
    assert summary.model_uri and summary.model_uri.startswith("models:/")
    model = mlflow.pytorch.load_model(summary.model_uri)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    info = mlflow.models.get_model_info(summary.model_uri)
    assert info.signature is not None and info.run_id == summary.parent_run_id


def test_the_command_line_runs_the_debug_sweep(tmp_path):
    out = run_cli(tmp_path, "debug=default", "num_samples=2", "search=random")
    assert "== Status ==" in out and "| decision" in out  # Ray's table, with the decisions
    assert "best val_acc (max):" in out and "trials by final status:" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)


class KillWorkerAt(tune.Callback):
    """Sends SIGKILL to the trial's worker process once, when it reports ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.killed = epoch, False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.killed and result["epoch"] == self.epoch:
            self.killed = True
            os.kill(result["pid"], signal.SIGKILL)


def _fit(tmp_path, name, callbacks):
    config = {
        "optimizer": "sgd_momentum",
        "lr": 0.05,
        "dropout": 0.2,
        "epochs": 6,
        "attempt": 0,
        "seed": 11,
        "run": run_settings(
            SweepConfig(trainable=TrainableConfig(checkpoint_every=1, data=DataConfig(max_samples=400))),
            str(tmp_path),
        ),
    }
    tuner = tune.Tuner(
        tune.with_resources(train, {"cpu": 1}),
        param_space=config,
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(tmp_path),
            verbose=0,
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    (result,) = list(tuner.fit())
    assert result.error is None
    with result.checkpoint.as_directory() as path:
        state = torch.load(os.path.join(path, CHECKPOINT_FILE), weights_only=True)
    return result, state


def test_a_killed_trial_resumes_from_its_checkpoint_with_the_same_weights(tmp_path):
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        killer = KillWorkerAt(epoch=3)
        straight, straight_state = _fit(tmp_path, "straight", [])
        killed, killed_state = _fit(tmp_path, "killed", [killer])
    finally:
        ray.shutdown()
    assert killer.killed
    epochs = list(killed.metrics_dataframe["epoch"])
    assert epochs[-1] == 6 and epochs[:3] == [1, 2, 3]
    assert 4 in epochs and epochs.index(4) >= 3  # went on after the kill
    assert killed_state["epoch"] == straight_state["epoch"] == 6
    for key, value in straight_state["state"]["model"].items():
        assert torch.equal(value, killed_state["state"]["model"][key]), key
    assert killed.metrics["val_acc"] == straight.metrics["val_acc"]


def test_the_driver_does_not_import_torch():
    code = "import sys, orchestrator.sweep, orchestrator.__main__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_convergence_scheduler_restarts_stuck_prunes_diverging_stops_converged(tmp_path, monkeypatch):
    """Three real trials on digits, one seed for all first attempts (seed 1), one at a time so
    every decision sees the same finished trials whatever the machine's speed: sweep seed 5
    orders the grid lr 0.03, 0.1, 20. lr 0.03 trains well and converges (nothing finished before
    it, so it is no contender and stops); lr 0.1 learns, then collapses back to chance with that
    seed (it is held while its window decides, though the leader would prune it as predicted
    worse) and restarts with a new seed; lr 20 blows up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fixed = {
        "optimizer": "sgd_momentum",
        "hidden_layers": 2,
        "width": 32,
        "activation": "relu",
        "batch_size": 32,
        "batch_norm": "false",
        "dropout": 0.0,
        "weight_decay": 0.0,
    }
    cfg = _config(
        [
            "name=three",
            "seed=5",
            "search=grid",
            "num_samples=3",
            "max_concurrent_trials=1",
            "trainable.epochs=30",
            "scheduler=convergence",
            "scheduler.max_restarts=1",
            "~trainable.hparams.lr",
            "+trainable.hparams.lr={type:choice,values:[0.03,0.1,20.0]}",
            "+trainable.hparams.seed=1",
        ]
        + [f"trainable.hparams.{k}={v}" for k, v in fixed.items()]
    )
    summary = run(cfg, resolved_yaml="name: three", overrides=())
    by_lr = {row["lr"]: row for row in summary.trials}
    order = sorted(summary.trials, key=lambda row: _index(summary, row["trial_id"]))
    assert [row["lr"] for row in order] == [0.03, 0.1, 20.0], "the premise: the grid's order for seed 5"
    assert by_lr[0.03]["status"] == "CONVERGED" and by_lr[0.03]["epochs"] < 30
    assert by_lr[20.0]["status"] == "PRUNED" and by_lr[20.0]["verdict"] == "diverged"
    stuck = by_lr[0.1]
    assert stuck["attempts"] == 2 and stuck["status"] in ("CONVERGED", "COMPLETED")
    assert stuck["value"] > 0.9

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.data.params.get("lr"): r for r in _children(client, summary.parent_run_id)}
    assert runs["0.03"].data.tags["final_status"] == "CONVERGED"
    assert int(runs["0.03"].data.tags["convergence_epoch"]) < 30
    assert runs["20.0"].data.tags["final_status"] == "PRUNED"
    assert runs["20.0"].data.tags["verdict"] == "diverged"
    restarted = runs["0.1"]
    assert restarted.data.tags["attempts"] == "2"
    lineage = json.loads(restarted.data.tags["lineage"])
    assert lineage[0]["outcome"].startswith("restarted: stuck") and lineage[1]["seed"] is not None
    (attempt_run,) = _children(client, restarted.info.run_id)
    assert attempt_run.data.tags["attempt"] == "1" and "stuck" in attempt_run.data.tags["restart_reason"]
    first = [m.step for m in client.get_metric_history(restarted.info.run_id, "val_acc")]
    second = [m.step for m in client.get_metric_history(attempt_run.info.run_id, "val_acc")]
    assert first == list(range(1, len(first) + 1)) and second == list(range(1, len(second) + 1))
    assert client.get_metric_history(attempt_run.info.run_id, "val_acc")[-1].value > 0.9
    for r in [*runs.values(), attempt_run]:
        assert r.info.status == "FINISHED"
    for r in runs.values():
        assert "learning_curve.png" in {a.path for a in client.list_artifacts(r.info.run_id)}

    # the sweep's Optuna study: each trial as the scheduler ended it, the restart and its reason
    store = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name=os.path.basename(summary.results_dir), storage=store)
    told = {t.params["lr"]: t for t in study.trials}
    assert told[0.03].state == TrialState.COMPLETE and told[0.03].user_attrs["verdict"] == "converged"
    assert told[20.0].state in (TrialState.PRUNED, TrialState.FAIL)
    assert told[20.0].user_attrs["verdict"] == "diverged"
    assert told[0.1].state == TrialState.COMPLETE and told[0.1].value > 0.9
    assert told[0.1].user_attrs["attempts"] == 2 and "stuck" in told[0.1].user_attrs["restart_reasons"][0]

    # the convergence report: beside the results, on the parent run, the same from either source
    assert summary.report == os.path.join(summary.results_dir, "report", "report.md")
    logged = {a.path for a in client.list_artifacts(summary.parent_run_id, "report")}
    files = ("report.md", "report.json", "anytime.png", "curves.png", "timeline.png")
    assert {f"report/{f}" for f in files} == logged
    assert client.get_run(summary.parent_run_id).data.metrics["report_restarts_helped"] == 1
    from_ray = build(load_ray_dir(summary.results_dir), with_importance=False)
    from_mlflow = build(load_mlflow(summary.parent_run_id, summary.tracking_uri), with_importance=False)
    assert [t.as_dict() for t in from_ray.tables()] == [t.as_dict() for t in from_mlflow.tables()]
    assert from_ray.trials_table().rows == from_mlflow.trials_table().rows
    headline = from_ray.summary()
    assert headline["restarts"] == headline["restarted_trials"] == headline["restarts_helped"] == 1
    assert headline["epochs_run"] == summary.epochs_run
    good = next(st for st in from_ray.stats if st.trial.params["lr"] == 0.03)
    (trial_dir,) = glob.glob(os.path.join(summary.results_dir, f"*_{good.trial.trial_id}"))
    with open(os.path.join(trial_dir, "result.json")) as f:
        recorded = [json.loads(line)["val_acc"] for line in f]
    assert good.convergence_epoch == convergence_epoch(recorded, mode="max")
    assert good.convergence_epoch == int(runs["0.03"].data.tags["convergence_epoch"])


def _epochs_logged(db) -> bool:
    """Read-only look into the sweep's store (an MlflowClient here would race its migrations)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM metrics WHERE key = 'val_acc'").fetchone()[0] > 0
    except sqlite3.Error:  # tables not created yet
        return False


def test_ctrl_c_ends_the_sweep_with_every_mlflow_run_ended(tmp_path):
    proc = start_cli(tmp_path, "num_samples=8", "trainable.epochs=40", "verbose=0")
    db = tmp_path / "mlflow.db"
    deadline = time.time() + 240
    while time.time() < deadline and not _epochs_logged(db):  # some trial has logged an epoch
        time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "was INTERRUPTED after" in out
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED" and parent.data.tags["final_status"] == "INTERRUPTED"
