"""The sweep's summary: the terminal text and the parent run's Markdown description (no Ray)."""

import os

from mlflow.tracking import MlflowClient

from orchestrator.reporting import report_location
from orchestrator.summary import SweepSummary
from orchestrator.tracking import NOTE_TAG, SweepTracker


def summary(results_dir: str, **kw) -> SweepSummary:
    fields = {
        "name": "debug",
        "metric": "val_acc",
        "mode": "max",
        "best_value": 0.961234,
        "best_params": {"lr": 0.0123456, "activation": "relu"},
        "best_trial": "trial_0003_abc",
        "statuses": {"PRUNED": 3, "CONVERGED": 2, "COMPLETED": 1},
        "epochs_run": 40,
        "epochs_budget": 60,
        "restarts": 1,
        "wall_s": 12.3,
        "results_dir": results_dir,
    }
    return SweepSummary(**{**fields, **kw})


def test_the_description_holds_the_best_value_as_printed_and_the_statuses(tmp_path):
    s = summary(str(tmp_path), best_run_id="r1", model_uri="models:/m/1")
    text = s.markdown("`somewhere/report.md`")
    assert "**0.9612**" in text and "0.9612" in s.render()
    assert "trial `trial_0003_abc` (run `r1`)" in text
    assert "| lr | 0.01235 |" in text and "| activation | relu |" in text
    assert "| CONVERGED | 2 |" in text and "| PRUNED | 3 |" in text and "| COMPLETED | 1 |" in text
    assert "40 run of 60 budgeted (20 saved); restarts: 1" in text and "6 trials" in text
    assert "- convergence report: `somewhere/report.md`" in text and "`models:/m/1`" in text
    assert "convergence report" not in s.markdown()


def test_an_interrupted_sweep_without_a_value_says_so(tmp_path):
    text = summary(str(tmp_path), best_value=None, best_params={}, interrupted=True).markdown()
    assert "was **interrupted** after" in text and "No trial reported a finite `val_acc`" in text
    assert "best configuration" not in text and "convergence report" not in text


def test_the_report_location_is_said_before_the_report_is_written(tmp_path):
    local = summary(str(tmp_path), tracking_uri="sqlite:///x.db", parent_run_id="p1")
    expected = f"`{os.path.join(str(tmp_path), 'report', 'report.md')}` and this run's `report/` artifacts"
    assert report_location(local) == expected
    assert (
        report_location(summary(str(tmp_path))) == f"`{os.path.join(str(tmp_path), 'report', 'report.md')}`"
    )
    remote = summary("s3://bucket/sweep", tracking_uri="http://mlflow", parent_run_id="p1")
    assert report_location(remote) == "this run's `report/` artifacts"
    assert report_location(summary("s3://bucket/sweep", parent_run_id="pending-1")) is None


def test_the_description_becomes_the_parent_runs_note(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "note", interval_s=0.2)
    tracker.start_sweep("note", {}, {}, {})
    parent = tracker.parent_run_id
    tracker.end_sweep("FINISHED", {"final_status": "FINISHED"}, {"trials": 1.0}, "### Sweep\n\n**0.9**\n")
    tags = MlflowClient(tracker.uri).get_run(parent).data.tags
    assert tags[NOTE_TAG] == "### Sweep\n\n**0.9**\n" and tags["final_status"] == "FINISHED"
