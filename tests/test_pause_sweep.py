"""Freeze-thaw in a real sweep: real Ray, real MLflow (SQLite in tmp), real torch training.

Nine digits MLP trials of 4 epochs, two at a time, the convergence scheduler with its rungs at
epochs 1 and 3 and ``pause_margin=1`` (every trial a rung cuts that learned is paused, none is
too far to resume): a paused trial resumes from the checkpoint of the epoch it paused at (it
reports that epoch again, marked ``replayed``, then goes on; never from epoch 1), and its MLflow
run says where it paused, why, and why it resumed.
"""

from __future__ import annotations

import json
import os

import pytest
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from orchestrator.config import load_config
from orchestrator.sweep import run

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP = [
    "debug=default",
    "name=pause",
    "scheduler=convergence",
    "scheduler.pause_margin=1.0",
    "search=random",
    "num_samples=9",
    "trainable.epochs=4",
    "report=false",
    "tracking.log_model=false",
]


def _results(trial_dir: str) -> list[dict]:
    with open(os.path.join(trial_dir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_a_paused_trial_resumes_from_its_checkpoint_and_mlflow_shows_it(tmp_path, monkeypatch):
    # Ray's workers import this checkout (a relative PYTHONPATH or an editable install of another
    # checkout would give them other code than the driver's)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with initialize_config_module(config_module="conf", version_base="1.3"):
        composed = compose(config_name="config", overrides=SWEEP)
    cfg = load_config(OmegaConf.to_container(composed, resolve=True))
    summary = run(cfg, resolved_yaml=OmegaConf.to_yaml({"name": "pause"}), overrides=tuple(SWEEP))

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "pause"]
    runs = client.search_runs([experiment.experiment_id], "tags.paused_at_epoch != ''")
    resumed = [r for r in runs if "resume_reason" in r.data.tags]
    assert resumed, [r.data.tags.get("decision_reason") for r in runs]
    for run_ in resumed:
        tags = run_.data.tags
        paused_at = int(tags["paused_at_epoch"])
        assert tags["pause_reason"].startswith(f"rank rule: below its rung at epoch {paused_at}; ")
        assert tags["resumed_at_epoch"] == str(paused_at + 1) and tags["final_status"]
        history = json.loads(tags["pause_history"])
        assert history[-1]["epoch"] == paused_at and all(h["resumed"] for h in history)
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_acc")]
        assert steps == list(range(1, 5))  # every epoch once: continued, never started over
        assert tags["ray_trial_dir"].startswith(summary.results_dir)
        epochs = [(r["epoch"], bool(r.get("replayed"))) for r in _results(tags["ray_trial_dir"])]
        for pause in history:  # after each pause: that epoch restored from its checkpoint, then the next
            at = epochs.index((pause["epoch"], False))
            assert epochs[at + 1 : at + 3] == [(pause["epoch"], True), (pause["epoch"] + 1, False)]
        assert [e for e, replayed in epochs if not replayed] == [1, 2, 3, 4]
    assert (summary.paused, summary.resumed) == (len(runs), len(resumed))
    assert summary.pauses_line in summary.render()
    never = [r for r in runs if "resume_reason" not in r.data.tags]
    for run_ in never:  # paused and never resumed: pruned, saying where it paused
        assert run_.data.tags["final_status"] == "PRUNED"
        assert run_.data.tags["decision_reason"].startswith("paused at epoch")
