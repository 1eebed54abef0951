"""The best model's export from a warmed-up subprocess (orchestrator.exporting, orchestrator.export)."""

import glob
import os
import shutil
import tempfile

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from orchestrator.exporting import ExportError, ModelExporter, WarmExporter
from orchestrator.schema import SweepConfig, TrainableConfig
from orchestrator.trial import Trial as TrainTrial
from orchestrator.trials import run_settings
from trainables.data import load_dataset
from trainables.hparams import TrialParams
from trainables.trainer import Trainer

RUN = run_settings(SweepConfig(trainable=TrainableConfig(checkpoint_every=1)), os.getcwd())
CONFIG = {"lr": 0.01, "optimizer": "adam", "hidden_layers": 1, "width": 16, "epochs": 2, "run": RUN}


def _temp_files():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "export-*.json")))


@pytest.fixture
def trained(tmp_path):
    """A 2-epoch checkpoint in the trainable's format, a store with an open run, the model's inputs."""
    data = load_dataset("digits", None, val_fraction=0.25, split_seed=0)
    trainer = Trainer("mlp", data, TrialParams.from_config(CONFIG), 7, "cpu")
    ckpt = tmp_path / "ckpt"
    trial = TrainTrial(
        seed=7,
        attempt=0,
        epochs=2,
        hp={},
        sink=lambda _r, d: d and shutil.copytree(d, ckpt, dirs_exist_ok=True),
    )
    trial.watch(trainer.model, trainer.optimizer)
    for epoch in (1, 2):
        trainer.train_epoch()
        trial.report(epoch, val_acc=0.5, checkpoint={"model": trainer.model, "optimizer": trainer.optimizer})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "art")))
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(trainer.x_val[:8])
    spec = {"checkpoint": str(ckpt), "config": CONFIG, "tracking_uri": uri, "run_id": run.info.run_id}
    return spec, trainer.x_val[:8], expected


@pytest.mark.slow
def test_a_warmed_up_export_logs_the_checkpoints_model(trained):
    spec, x, expected = trained
    before = _temp_files()
    exporter = ModelExporter({"run": RUN, "tracking_uri": spec["tracking_uri"]})
    exporter.start()
    uri = exporter.export({**spec, "trial": "trial_0001"})
    assert uri.startswith("models:/")
    mlflow.set_tracking_uri(spec["tracking_uri"])
    model = mlflow.pytorch.load_model(uri)
    with torch.no_grad():
        assert torch.allclose(model(x), expected)
    info = mlflow.models.get_model_info(uri)
    assert info.run_id == spec["run_id"]
    assert _temp_files() == before  # the warm-up and spec files are gone


@pytest.mark.slow
def test_an_export_that_fails_says_why_in_one_line(trained):
    spec, _, _ = trained
    exporter = ModelExporter({"run": RUN, "tracking_uri": spec["tracking_uri"]})
    with pytest.raises(ExportError) as info:
        exporter.export({**spec, "checkpoint": "/nonexistent/ckpt"})  # cold: started by export
    assert "/nonexistent/ckpt" in str(info.value) and "\n" not in str(info.value)


def test_an_unused_warm_up_ends_cleanly():
    before = _temp_files()
    exporter = ModelExporter({"run": RUN, "tracking_uri": "sqlite:////nonexistent/dir/mlflow.db"})
    exporter.start()
    proc = exporter._proc
    exporter.close()
    assert proc.returncode is not None  # stopped, not left behind
    assert not exporter.started and _temp_files() == before


def _trials(*statuses):
    trials = [Trial("x", config={}, trial_id=f"t{i}", stub=True) for i in range(len(statuses))]
    for trial, status in zip(trials, statuses, strict=True):
        trial.set_status(status)
    return trials


def test_the_warm_up_starts_when_no_trial_is_left_to_start():
    exporter = ModelExporter({"run": RUN, "tracking_uri": "sqlite:////nonexistent/dir/mlflow.db"})
    warm = WarmExporter(exporter, trials=10)
    try:
        nine = _trials(Trial.TERMINATED, *[Trial.RUNNING] * 8)
        warm.on_trial_complete(0, nine, nine[0])  # the searcher has a tenth to propose
        assert not exporter.started
        ten = [*nine, *_trials(Trial.PENDING)]
        warm.on_trial_complete(0, ten, ten[0])  # the tenth waits for that slot
        assert not exporter.started
        ten[9].set_status(Trial.RUNNING)
        ten[1].set_status(Trial.ERROR)
        warm.on_trial_error(0, ten, ten[1])  # nothing is left to start: this slot stays idle
        assert exporter.started
        proc = exporter._proc
        ten[2].set_status(Trial.TERMINATED)
        warm.on_trial_complete(0, ten, ten[2])
        assert exporter._proc is proc  # once
    finally:
        exporter.close()
