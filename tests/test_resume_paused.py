"""Resuming a sweep stopped while some trials were PAUSED (freeze-thaw): real Ray, MLflow, torch.

The sweep of tests/test_pause_sweep.py (``pause_margin=1``: every trial a rung cuts that learned
is paused), one trial at a time, is stopped the two ways of tests/test_resume.py: preempted
(SIGTERM: the driver saves the sweep and exits 75) once a second trial paused, so the first is
PAUSED and the second's pause is under way; or SIGKILLed as soon as Ray's snapshot holds a
PAUSED trial. ``resume=auto`` (the same command again, after a preemption) or ``resume=<sweep
dir>`` (after the kill) then finishes it, though the prior file it started with is gone: every
trial is accounted for once in the summary, MLflow and Optuna, none left RUNNING; a paused trial
resumes from the checkpoint of the epoch it paused at (each epoch trained and logged once, never
from epoch 1 again) or ends pruned saying where it paused; its pause tags agree with its pause
history.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, run_cli
from mlflow.tracking import MlflowClient
from test_resume import _kill_group, check_mlflow_record, check_study

from analysis.load import ray_snapshot
from orchestrator.policy.prior import PriorModel
from orchestrator.priors import SHIPPED
from orchestrator.resume import PRIOR_FILE

pytestmark = pytest.mark.slow
TRIALS, EPOCHS = 9, 4  # rungs (at epochs 1 and 3) need reduction_factor**2 = 9 trials


def _args(results) -> list[str]:
    prior = results.parent / "earlier_prior.json"  # a stored prior; gone before the sweep resumes
    return [
        f"scheduler.prior={prior}",
        "scheduler.prior_cut=0",  # read and stored, never cutting: the pauses are the test's
        "debug=default",
        "name=pausekill",
        "scheduler.pause_margin=1.0",
        "search=random",
        f"num_samples={TRIALS}",
        f"trainable.epochs={EPOCHS}",
        "report=false",
        "tracking.log_model=false",
        "verbose=0",
        "max_concurrent_trials=1",
        "trainable.checkpoint_every=1",  # Ray snapshots the sweep after a trial's 4th checkpoint
        f"storage.path={results}",
    ]


def _newest(sweep_dir: str, pattern: str) -> str | None:
    found = sorted(glob.glob(os.path.join(sweep_dir, pattern)))
    return found[-1] if found else None


def _paused_in_snapshot(sweep_dir: str) -> set[str]:
    """The trials Ray's newest snapshot holds as PAUSED and the scheduler's state there as paused
    (their pause open); none while the snapshot is incomplete or being written."""
    callbacks = _newest(sweep_dir, "callback-states-*.pkl")
    try:
        trials = ray_snapshot(sweep_dir) or []
        with open(callbacks, "rb") as f:
            pauses = pickle.load(f)[0]["scheduler"]["policy"]["pauses"]
    except (TypeError, OSError, ValueError, EOFError, pickle.UnpicklingError, KeyError):
        return set()
    ray_paused = {t["trial_id"] for t in trials if t.get("status") == "PAUSED"}
    open_ = {tid for tid, records in pauses.items() if not (records[-1]["resumed"] or records[-1]["stopped"])}
    return ray_paused & open_


def _start(tmp_path, results, **output) -> subprocess.Popen:
    """Start the sweep of :func:`_args` in its own process group, its output as ``output`` says."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *_args(results)],
        cwd=tmp_path,
        env=cli_env(),
        start_new_session=True,
        **output,
    )


def _preempt_while_paused(tmp_path, results) -> tuple[str, set[str]]:
    """Start the sweep, SIGTERM its driver (a preemption: it saves the sweep and exits 75) once it
    paused a trial; return the sweep directory and the trials its last snapshot holds paused."""
    proc = _start(tmp_path, results, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen, pausing = [], set()
        for line in proc.stdout:  # one trial at a time: a second trial paused, the first one is PAUSED
            seen.append(line)
            if ": paused at epoch " in line:  # (the second one's pause is decided, not yet done)
                pausing.add(line.split(":")[0])
            if len(pausing) == 2:
                os.kill(proc.pid, signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        _kill_group(proc)
    output = "".join(seen) + (rest or "")
    assert proc.returncode == 75, output[-3000:]
    (sweep_dir,) = glob.glob(str(results / "*"))
    paused = _paused_in_snapshot(sweep_dir)
    assert paused, output[-3000:]
    return sweep_dir, paused


def _kill_while_paused(tmp_path, results) -> tuple[str, set[str]]:
    """Start the sweep, SIGKILL its driver as soon as Ray's snapshot holds a trial PAUSED (the
    driver dies as it is: what it did after that snapshot is lost); return the sweep directory
    and the trials that snapshot holds paused."""
    proc = _start(tmp_path, results, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            for sweep_dir in glob.glob(str(results / "*")):
                if paused := _paused_in_snapshot(sweep_dir):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    return sweep_dir, paused
            time.sleep(0.05)
    finally:
        _kill_group(proc)
        proc.wait(timeout=30)
    raise AssertionError("the sweep ended before Ray's snapshot held a paused trial")


@pytest.mark.parametrize("stop", [_preempt_while_paused, _kill_while_paused], ids=["SIGTERM", "SIGKILL"])
def test_a_sweep_killed_with_paused_trials_is_finished_by_resume(tmp_path, stop):
    results, prior = tmp_path / "results", tmp_path / "earlier_prior.json"
    shutil.copy(SHIPPED, prior)
    sweep_dir, paused = stop(tmp_path, results)
    prior.unlink()  # the resumed sweep uses the prior it stored when it started

    # preempted: the same command again with resume=auto (its prior file is gone: not checked)
    again = ["resume=auto", *_args(results)] if stop is _preempt_while_paused else [f"resume={sweep_dir}"]
    out = run_cli(tmp_path, *again)
    assert f"Ray results: {sweep_dir}" in out and "trials by final status:" in out, out
    stored = json.loads((Path(sweep_dir) / PRIOR_FILE).read_text())
    assert PriorModel.from_dict(stored) == PriorModel.from_dict(json.loads(SHIPPED.read_text()))
    by_trial = check_mlflow_record(tmp_path / "mlflow.db", sweep_dir, TRIALS)
    check_study(tmp_path / "optuna.db", sweep_dir, by_trial)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs(["1"]) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.metrics["trials"] == TRIALS
    assert parent.data.metrics["trials_interrupted"] == 0  # the preempted driver logged 1
    runs = [r for r in client.search_runs(["1"]) if "trial_id" in r.data.tags]
    runs = [r for r in runs if "attempt" not in r.data.tags]  # the trials' own runs, not restarts'
    runs = [r for r in runs if r.data.tags.get("final_status") != "LOST"]  # started after the snapshot
    with_pauses = {r.data.tags["trial_id"]: r for r in runs if "pause_history" in r.data.tags}
    assert paused <= set(with_pauses), (paused, sorted(with_pauses))
    for tid, run_ in with_pauses.items():
        _check_pauses(client, run_, by_trial[tid])
    resumed = sum("resume_reason" in r.data.tags for r in with_pauses.values())
    assert parent.data.metrics["paused_trials"] == len(with_pauses)
    assert parent.data.metrics["resumed_trials"] == resumed
    assert f"paused: {len(with_pauses)} trials, {resumed} resumed from their checkpoint" in out, out


def _check_pauses(client: MlflowClient, run_, rows: list[dict]) -> None:
    """A paused trial's record: trained each epoch once, never from scratch again; every pause
    resumed or ended; if it ended while paused, pruned saying where it paused."""
    tags = run_.data.tags
    at = int(tags["paused_at_epoch"])
    history = json.loads(tags["pause_history"])
    assert tags["pause_reason"].startswith(f"rank rule: below its rung at epoch {at}; "), tags
    assert history[-1]["epoch"] == at and tags["pauses"] == str(len(history)), tags
    assert all(h["resumed"] or h["stopped"] for h in history), history  # none left open
    assert all(h["resumed"] for h in history[:-1]), history  # paused again: it had resumed
    trained = [int(r["epoch"]) for r in rows if not r.get("replayed")]
    assert trained == list(range(1, trained[-1] + 1)), (tags["trial_id"], trained)  # never started over
    steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_acc")]
    assert steps == trained, (tags["trial_id"], steps)
    for pause in history:  # resumed: the checkpoint of the paused epoch replayed, then the next epoch
        if pause["resumed"]:
            epochs = [(int(r["epoch"]), bool(r.get("replayed"))) for r in rows]
            after = epochs[epochs.index((pause["epoch"], False)) + 1 :]
            assert after[:2] == [(pause["epoch"], True), (pause["epoch"] + 1, False)], epochs
    if "resume_reason" in tags:
        assert tags["resumed_at_epoch"] == str(at + 1), tags
    else:  # ended while paused: pruned, saying where it paused
        assert tags["final_status"] == "PRUNED" and trained[-1] == at, tags
        assert tags["decision_reason"].startswith(f"paused at epoch {at}"), tags
