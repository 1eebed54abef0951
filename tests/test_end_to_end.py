"""End-to-end sweeps with real Ray, a real MLflow store and real PyTorch training."""

import os
import signal
import subprocess
import sys

import pytest
import ray
import torch
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from orchestrator.config import load_config
from orchestrator.sweep import run
from trainables.entry import train
from trainables.train import CHECKPOINT_FILE

pytestmark = pytest.mark.slow


def _config(overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return load_config(OmegaConf.to_container(cfg, resolve=True))


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
    children = _children(client, summary.parent_run_id)
    assert len(children) == cfg.num_samples == sum(summary.statuses.values())
    for child in children:
        assert child.info.status == "FINISHED"
        epochs = int(child.data.tags["epochs_run"])
        assert child.data.tags["final_status"] in ("COMPLETED", "STOPPED_EARLY")
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, epochs + 1))
        for key in ("train_loss", "val_loss", "grad_norm", "dead_frac", "lr", "seed", "attempt"):
            assert len(client.get_metric_history(child.info.run_id, key)) == epochs, key
        assert "lr" in child.data.params and "run" not in child.data.params
    best = client.get_run(summary.best_run_id)
    assert best.data.tags["mlflow.parentRunId"] == summary.parent_run_id
    assert best.data.metrics["val_acc"] == pytest.approx(summary.best_value, abs=1e-12)
    assert summary.best_value == max(c.data.metrics["val_acc"] for c in children)
    assert os.path.isdir(summary.results_dir)
    assert not ray.is_initialized()


def test_the_command_line_runs_the_debug_sweep(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "debug=default", "num_samples=2", "search=random"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Trial status" in proc.stdout  # Ray's own progress table
    assert "best val_acc (max):" in proc.stdout and "trials by final status: COMPLETED 2" in proc.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
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
        "run": {
            "model": "mlp",
            "dataset": "digits",
            "checkpoint_every": 1,
            "sweep_seed": 0,
            "data": {"max_samples": 400},
        },
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
    for key, value in straight_state["model"].items():
        assert torch.equal(value, killed_state["model"][key]), key
    assert killed.metrics["val_acc"] == straight.metrics["val_acc"]


def test_the_driver_does_not_import_torch():
    code = "import sys, orchestrator.sweep, orchestrator.__main__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
