"""Reopening a sweep whose driver died: its parent run and its unfinished trials' runs, not new ones.

The store is the record: a trial's run is found under the parent run by its ``trial_id`` tag,
a restart's run under the trial's run by its ``attempt`` tag. A run that ended (FINISHED or
FAILED) stays ended; every other one is set RUNNING again and logged to from where it stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow.tracking import MlflowClient

from orchestrator.errors import ConfigError
from orchestrator.tracking.deliver import KEY_TAG, PARENT_TAG
from orchestrator.tracking.runs import _OpenRun, _TrialRuns, is_pending

if TYPE_CHECKING:
    from orchestrator.tracking.tracker import SweepTracker


def reopen_sweep(tracker: SweepTracker, parent_run_id: str) -> dict[str, tuple[int, int]]:
    """Reopen the sweep run ``parent_run_id`` (its id or, if the store was down when it started,
    its handle) and its unfinished trials' runs in ``tracker``; see :meth:`SweepTracker.resume`.

    Returns each trial's (latest attempt, last ``val_loss`` step logged there), so nothing is
    logged twice. Raises ConfigError when a handle names a run that never reached the store.
    """
    client, experiment_id = tracker.client, tracker.experiment_id

    def reopen(run_id: str) -> _OpenRun:
        tracker._resolved[run_id] = run_id
        client.update_run(run_id, status="RUNNING")
        return _OpenRun(run_id)

    if is_pending(parent_run_id):  # the store was down when the sweep started
        found = f"tags.`{KEY_TAG}` = '{parent_run_id}'"
        runs = client.search_runs([experiment_id], filter_string=found, max_results=1)
        if not runs:
            raise ConfigError(f"resume: the sweep's MLflow run {parent_run_id} never reached {tracker.uri}")
        parent_run_id = runs[0].info.run_id
    tracker.parent = reopen(parent_run_id)
    logged: dict[str, tuple[int, int]] = {}
    for run in _children(client, experiment_id, parent_run_id):
        trial_id, run_id = run.data.tags.get("trial_id"), run.info.run_id
        if trial_id is None:
            continue
        tracker._resolved[run_id] = run_id
        tracker.run_ids._handles[trial_id] = run_id
        restarts = _children(client, experiment_id, run_id)
        nested = {int(r.data.tags.get("attempt", 0)): r.info.run_id for r in restarts}
        attempt = max(nested, default=0)
        logged[trial_id] = (attempt, _last_step(client, nested.get(attempt, run_id)))
        if run.info.status in ("FINISHED", "FAILED"):
            continue
        runs = _TrialRuns(reopen(run_id))
        runs.attempts = {a: reopen(r) for a, r in nested.items()}
        tracker.trials[trial_id] = runs
    return logged


def _children(client: MlflowClient, experiment_id: str, run_id: str) -> list[Any]:
    """The runs whose parent is ``run_id`` (up to 10000)."""
    found = f"tags.`{PARENT_TAG}` = '{run_id}'"
    return client.search_runs([experiment_id], filter_string=found, max_results=10000)


def _last_step(client: MlflowClient, run_id: str) -> int:
    """The last ``val_loss`` step logged to ``run_id`` (0: none)."""
    return max((m.step for m in client.get_metric_history(run_id, "val_loss")), default=0)
