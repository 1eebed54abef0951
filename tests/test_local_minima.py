"""The shipped local-minima experiment: a real sweep whose restarts end better than what they replaced.

Small ReLU MLPs on three spirals settle in local minima depending on their seed
(``conf/experiment/local_minima.yaml``). Run as a user would, one trial at a time so every
decision sees the same finished trials whatever the machine's speed; the summary, MLflow (the
restart as a nested attempt run) and the convergence report must all show the restart and that
it ended better than the attempt it replaced.
"""

import json
import re

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient


@pytest.mark.slow
def test_the_local_minima_sweep_restarts_a_trial_stuck_far_below_and_it_ends_better(tmp_path):
    out = run_cli(tmp_path, "experiment=local_minima", "max_concurrent_trials=1", timeout=600)
    restarts = re.search(r"restarts: (\d+), (\d+) ended better than the attempt they replaced", out)
    assert restarts is not None, out[-3000:]
    total, better = map(int, restarts.groups())
    assert total >= 1 and better >= 1

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "local_minima"]
    runs = client.search_runs([experiment.experiment_id])
    attempts = [r for r in runs if r.data.tags.get("attempt", "0") != "0"]
    assert len(attempts) == total
    rescued = 0
    for attempt_run in attempts:
        reason = attempt_run.data.tags["restart_reason"]
        assert re.search(r"local_minimum restart\w* .*(on trust|paid)", reason), reason
        trial_run = client.get_run(attempt_run.data.tags["mlflow.parentRunId"])
        lineage = json.loads(trial_run.data.tags["lineage"])
        assert lineage[0]["outcome"] == "restarted: plateau_bad" and lineage[1]["kind"] == "local_minimum"
        first = client.get_metric_history(trial_run.info.run_id, "val_acc")[-1].value
        last = client.get_metric_history(attempt_run.info.run_id, "val_acc")[-1].value
        rescued += last > first
    assert rescued == better

    report = next((tmp_path / "results").glob("local_minima_*/report/report.md")).read_text()
    counted = rf"restarts: {total} in \d+ trials, [1-9]\d* ended better than their first attempt"
    assert re.search(counted, report)
