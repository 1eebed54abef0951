"""Faults during a real sweep: nothing the sweep recorded is lost.

Each test runs a small real sweep (real Ray, MLflow store, PyTorch training), injects one
fault, and checks that every configured trial is accounted for and that each trial's MLflow
run holds each epoch once and ended (none left RUNNING). The driver killed mid-sweep is in
tests/test_resume.py; the MLflow server going away in tests/test_tracking_resilience.py.
"""

import glob
import os
import pickle
import signal

import pytest
import ray
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from ray import tune
from ray.cluster_utils import Cluster

from analysis.load import read_results
from orchestrator.config import load_config
from orchestrator.sweep import run

pytestmark = pytest.mark.slow


def _config(overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def _small(*overrides):
    base = ["debug=default", "report=false", "tracking.log_model=false", "verbose=0"]
    return _config([*base, "trainable.checkpoint_every=1", *overrides])


def _results(summary):
    """Each Ray trial's results (``result.json``), by trial id."""
    out = {}
    for path in glob.glob(os.path.join(summary.results_dir, "trial_*", "result.json")):
        rows = read_results(path)
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def _restored_from_checkpoint(rows):
    """A trial process that started from a checkpoint: its first result repeats the checkpoint's
    epoch (``replayed``) or comes after epoch 1."""
    return any(r["iterations_since_restore"] == 1 and (r["epoch"] > 1 or r.get("replayed")) for r in rows)


def check_record(summary, num_trials):
    """Every trial accounted for; each MLflow trial run has each epoch of each attempt once and ended."""
    assert sum(summary.statuses.values()) == num_trials and "INTERRUPTED" not in summary.statuses
    client = MlflowClient(summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    exp = parent.info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    results = _results(summary)
    assert len({r.data.tags["trial_id"] for r in runs}) == len(runs) == num_trials
    assert set(results) <= {r.data.tags["trial_id"] for r in runs}
    for run_ in runs:
        assert run_.info.status in ("FINISHED", "FAILED"), run_.info
        rows = results.get(run_.data.tags["trial_id"], [])  # none when it raised before its first epoch
        epochs = sorted({int(r["epoch"]) for r in rows if r["attempt"] == 0})
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_loss")]
        assert steps == epochs == list(range(1, len(epochs) + 1)), (run_.info.run_name, steps, epochs)
        if all(r["attempt"] == 0 for r in rows):
            assert int(run_.data.tags["epochs_run"]) == len(epochs)
    return {r.data.tags["trial_id"]: r for r in runs}, results


class KillWorkerOnce(tune.Callback):
    """SIGKILLs the worker process of the first trial that reports ``epoch``, while it trains the next."""

    def __init__(self, epoch):
        self.epoch, self.killed = epoch, None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.killed is None and result["epoch"] == self.epoch:
            self.killed = trial.trial_id
            os.kill(result["pid"], signal.SIGKILL)


def test_a_trial_whose_worker_is_killed_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _small("num_samples=2", "trainable.epochs=4", "scheduler=fifo", "failure.max_failures=1")
    killer = KillWorkerOnce(epoch=2)
    summary = run(cfg, callbacks=[killer])

    assert killer.killed is not None
    assert summary.statuses == {"COMPLETED": 2}
    runs, results = check_record(summary, 2)
    assert _restored_from_checkpoint(results[killer.killed])
    assert [r["epoch"] for r in results[killer.killed]][-1] == 4
    assert runs[killer.killed].data.tags["final_status"] == "COMPLETED"


class RemoveNodeOnce(tune.Callback):
    """Removes ``node`` from ``cluster`` once two trials run at the same time, both with at least
    ``ahead`` epochs to go (one of them is on that node: each node has one CPU); remembers the
    trials Ray then recovers."""

    def __init__(self, cluster, node, budget, ahead=10):
        self.cluster, self.node, self.removed, self.recovered = cluster, node, False, []
        self.last_epoch = budget - ahead

    def on_trial_result(self, iteration, trials, trial, result, **info):
        running = [t for t in trials if t.status == "RUNNING"]
        early = all(1 <= (t.last_result or {}).get("epoch", 0) <= self.last_epoch for t in running)
        if not self.removed and len(running) >= 2 and early:
            self.removed = True
            self.cluster.remove_node(self.node, allow_graceful=False)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovered.append(trial.trial_id)


def test_trials_of_a_node_that_leaves_the_cluster_are_rescheduled_and_finish(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        cfg = _small(  # all of digits, batches of 8, 40 epochs: however late the second trial starts
            "num_samples=2",  # and however far behind the driver's view is, both are mid-trial
            "trainable.epochs=40",
            "~trainable.data.max_samples",
            "trainable.hparams.batch_size=8",
            "scheduler=fifo",
            "failure.max_failures=2",
        )
        remover = RemoveNodeOnce(cluster, worker, budget=40)
        summary = run(cfg, callbacks=[remover])
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert remover.removed and len(remover.recovered) == 1
    assert summary.statuses == {"COMPLETED": 2}
    _, results = check_record(summary, 2)
    (moved,) = remover.recovered
    assert _restored_from_checkpoint(results[moved])
    for rows in results.values():
        assert rows[-1]["epoch"] == 40


def test_a_trial_that_raises_or_diverges_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """Four real configurations: batch norm on batches of one sample raises in PyTorch; plain SGD
    with lr 1e4 turns the loss NaN at once; lr 0.05 without batch norm trains."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hparams = {
        "optimizer": "sgd",
        "batch_size": 1,
        "hidden_layers": 1,
        "width": 32,
        "activation": "relu",
        "dropout": 0.0,
        "weight_decay": 0.0,
    }
    cfg = _small(
        "search=grid",
        "num_samples=4",
        "trainable.epochs=3",
        "failure.max_failures=0",
        "cluster.num_cpus=2",
        "~trainable.hparams.lr",
        "+trainable.hparams.lr={type:choice,values:[0.05,10000.0]}",
        "~trainable.hparams.batch_norm",
        "+trainable.hparams.batch_norm={type:choice,values:[false,true]}",
        *[f"trainable.hparams.{k}={v}" for k, v in hparams.items()],
    )
    summary = run(cfg)

    by_config = {(row["lr"], row["batch_norm"]): row for row in summary.trials}
    assert len(by_config) == 4
    assert by_config[(0.05, True)]["status"] == by_config[(10000.0, True)]["status"] == "ERROR"
    assert (
        by_config[(10000.0, False)]["status"] == "PRUNED"
        and by_config[(10000.0, False)]["verdict"] == "diverged"
    )
    assert by_config[(0.05, False)]["status"] in ("COMPLETED", "CONVERGED")

    client = MlflowClient(summary.tracking_uri)
    runs, _ = check_record(summary, 4)
    for run_ in runs.values():
        key = (float(run_.data.params["lr"]), run_.data.params["batch_norm"] == "True")
        if key[1]:  # raised: the run failed, and its error file says why
            assert run_.info.status == "FAILED" and run_.data.tags["final_status"] == "ERROR"
            with open(run_.data.tags["error_file"]) as f:
                assert "Expected more than 1 value per channel when training" in f.read()
        elif key[0] == 10000.0:  # diverged: pruned with its reason, the NaN losses kept as they were
            assert run_.data.tags["final_status"] == "PRUNED" and run_.data.tags["verdict"] == "diverged"
            assert run_.data.tags["verdict_reason"]
            losses = [m.value for m in client.get_metric_history(run_.info.run_id, "val_loss")]
            assert losses and all(v != v for v in losses)  # NaN
    # what Optuna was told, from the searcher state Ray saved with the experiment
    (state_file,) = glob.glob(os.path.join(summary.results_dir, "searcher-state-*.pkl"))
    with open(state_file, "rb") as f:
        study = pickle.load(f)["_ot_study"]
    told = {(t.params["lr"], t.params["batch_norm"]): t.state.name for t in study.trials}
    assert told[(0.05, True)] == told[(10000.0, True)] == "FAIL"  # raised
    assert told[(10000.0, False)] == "FAIL"  # non-finite loss
    assert told[(0.05, False)] == "COMPLETE"
