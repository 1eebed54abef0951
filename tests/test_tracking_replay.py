"""Spool replay and sweep reopening on a local SQLite store, read back with ``MlflowClient``.

No server and no Ray: ``sqlite:///{tmp_path}/mlflow.db``. A spool file written by hand is
replayed twice, and once more without its progress file, and nothing is duplicated; a sweep
left as a killed driver leaves it is reopened where it stopped.
"""

import atexit
import json
import os

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.errors import ConfigError
from orchestrator.resume import mark_lost
from orchestrator.tracking import KEY_TAG, PARENT_TAG, SweepTracker, main, replay
from orchestrator.tracking.ops import _Op

# ---------------------------------------------------------------------------------------------
# Spool replay on a local SQLite store


def _store(tmp_path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("replayed")


def _spool(tmp_path, uri: str, experiment_id: str) -> tuple[str, int]:
    """A spool file as a writer leaves it: a parent and a child created while the store was down."""
    ops = [
        _Op("create", "pending-p", {"name": "sweep", "tags": {"sweep": "s"}, "parent": None, "start": 10}),
        _Op("batch", "pending-p", {"params": {"num_samples": "1"}}),
        _Op("artifact", "pending-p", {"path": "config.yaml", "data": b"a: 1\n"}),
        _Op("create", "pending-c", {"name": "trial_t0", "tags": {"trial_id": "t0"}, "parent": "pending-p"}),
        _Op("batch", "pending-c", {"params": {"lr": "0.1"}}),
        *[_Op("batch", "pending-c", {"metrics": [["val_loss", 1.0 / s, 1000 + s, s]]}) for s in range(1, 6)],
        _Op("batch", "pending-c", {"metrics": [["val_acc", 0.1 * s, 1000 + s, s] for s in range(1, 6)]}),
        _Op("batch", "pending-c", {"tags": {"final_status": "COMPLETED"}}),
        _Op("end", "pending-c", {"status": "FINISHED", "end": 2000}),
        _Op("end", "pending-p", {"status": "FINISHED", "end": 2001}),
    ]
    path = str(tmp_path / "mlflow-spool-test.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"spool": 1, "uri": uri, "experiment_id": experiment_id, "resolved": {}}) + "\n")
        for seq, op in enumerate(ops, 1):
            op.seq = seq
            f.write(json.dumps(op.to_json()) + "\n")
    return path, len(ops)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def _record(client: MlflowClient, experiment_id: str) -> dict:
    """What the store holds, in a form two replays can be compared by."""
    runs = client.search_runs([experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    child = by_name["trial_t0"]
    return {
        "runs": sorted((r.info.run_name, r.info.status) for r in runs),
        "n_runs": len(runs),
        "ids": {name: r.info.run_id for name, r in by_name.items()},
        "parent_of_child": child.data.tags.get(PARENT_TAG),
        "keys": {name: r.data.tags.get(KEY_TAG) for name, r in by_name.items()},
        "steps": {key: _history(client, child.info.run_id, key) for key in ("val_loss", "val_acc")},
        "params": {name: dict(r.data.params) for name, r in by_name.items()},
        "artifacts": [a.path for a in client.list_artifacts(by_name["sweep"].info.run_id)],
    }


def _sent_metrics(monkeypatch) -> list[tuple[str, int]]:
    """The (key, step) of every metric a client sends from now on (the store itself drops exact
    duplicates of a row, so only what is sent shows that replay leaves logged values out)."""
    sent: list[tuple[str, int]] = []
    log_batch = MlflowClient.log_batch

    def recording(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        sent.extend((m.key, m.step) for m in metrics)
        return log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", recording)
    return sent


def test_replaying_a_spool_twice_duplicates_nothing(tmp_path, monkeypatch):
    uri, client, exp = _store(tmp_path)
    spool, n = _spool(tmp_path, uri, exp)
    sent = _sent_metrics(monkeypatch)

    assert replay(spool) == (n, 0)
    assert sorted(sent) == sorted((k, s) for k in ("val_acc", "val_loss") for s in range(1, 6))
    first = _record(client, exp)
    assert first["runs"] == [("sweep", "FINISHED"), ("trial_t0", "FINISHED")]
    assert first["parent_of_child"] == first["ids"]["sweep"]
    assert first["keys"] == {"sweep": "pending-p", "trial_t0": "pending-c"}
    assert [s for s, _, _ in first["steps"]["val_loss"]] == [1, 2, 3, 4, 5]
    assert [s for s, _, _ in first["steps"]["val_acc"]] == [1, 2, 3, 4, 5]
    assert first["params"] == {"sweep": {"num_samples": "1"}, "trial_t0": {"lr": "0.1"}}
    assert first["artifacts"] == ["config.yaml"]

    assert replay(spool) == (0, 0)  # its progress file says everything was delivered
    assert _record(client, exp) == first

    os.remove(spool + ".done")  # as if a replay died after delivering, before recording it
    sent.clear()
    assert replay(spool) == (n, 0)  # every op again, each one idempotent
    assert sent == []  # the runs' histories already hold every value: none is sent again
    assert _record(client, exp) == first
    with open(spool + ".done") as f:
        done = [json.loads(line) for line in f]
    assert sorted(e["seq"] for e in done if "seq" in e) == list(range(1, n + 1))
    assert {e["run"]: e["run_id"] for e in done if "run" in e} == {
        "pending-p": first["ids"]["sweep"],
        "pending-c": first["ids"]["trial_t0"],
    }


def test_the_replay_command_says_what_it_did(tmp_path, capsys):
    uri, client, exp = _store(tmp_path)
    spool, n = _spool(tmp_path, uri, exp)

    assert main(["replay", spool, "--uri", "http://127.0.0.1:1"]) == 1  # nothing listens there
    assert capsys.readouterr().out == (
        f"delivered 0 operations; {n} left: run this again when the store is reachable\n"
    )
    assert main(["replay", spool]) == 0
    assert capsys.readouterr().out == f"delivered {n} operations from {spool}; the record is complete\n"
    assert _record(client, exp)["n_runs"] == 2

    other = tmp_path / "not-a-spool.jsonl"
    other.write_text('{"hello": 1}\n')
    assert main(["replay", str(other)]) == 2
    assert capsys.readouterr().err == f"error: {other}: {other}: not an MLflow spool file\n"
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "No such file or directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Reopening a sweep whose driver died


def _dead_driver(uri: str) -> SweepTracker:
    """A sweep recorded up to a point, then left as a killed driver leaves it: runs RUNNING."""
    tracker = SweepTracker(uri, "reopened", interval_s=0.05)
    tracker.start_sweep("sweep", {"num_samples": 3}, {}, {})
    for tid in ("t0", "t1", "t2"):
        tracker.start_trial(tid, f"trial_{tid}", {"lr": 0.1})
    for step in (1, 2, 3):
        tracker.log_metrics("t0", {"val_loss": 1.0 / step}, step)
    for step in (1, 2, 3, 4):
        tracker.log_metrics("t1", {"val_loss": 1.0 / step}, step)
    tracker.start_attempt("t1", 1, "trial_t1 attempt 1", {"seed": "7"})
    for step in (1, 2):
        tracker.log_metrics("t1", {"val_loss": 2.0 / step}, step, attempt=1)
    tracker.end_trial("t2", "FINISHED", {"final_status": "COMPLETED"})
    assert tracker.flush()
    tracker._writer.stop()
    atexit.unregister(tracker._at_exit)  # the driver is gone: nobody ends its runs
    return tracker


def test_resume_reopens_the_unfinished_runs_and_says_what_was_logged(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dead = _dead_driver(uri)
    parent_id = dead.parent_run_id

    tracker = SweepTracker(uri, "reopened", interval_s=0.05)
    experiment = MlflowClient(uri).get_experiment(tracker.experiment_id)
    assert experiment.artifact_location == f"file://{tmp_path}/mlartifacts"  # beside the database
    logged = tracker.resume(dead.parent.run_id)  # the handle: looked up by its tag
    assert logged == {"t0": (0, 3), "t1": (1, 2), "t2": (0, 0)}
    assert tracker.parent_run_id == parent_id
    assert set(tracker.trials) == {"t0", "t1"} and set(tracker.trials["t1"].attempts) == {1}
    assert dict(tracker.run_ids) == dict(dead.run_ids)
    tracker.log_metrics("t0", {"val_loss": 0.2}, 4)
    tracker.end_trial("t0", "FINISHED", {"final_status": "COMPLETED"})
    tracker.end_sweep("FINISHED", {"final_status": "FINISHED"})

    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([tracker.experiment_id])}
    assert {name: r.info.status for name, r in runs.items()} == {
        "sweep": "FINISHED",
        "trial_t0": "FINISHED",
        "trial_t1": "KILLED",
        "trial_t1 attempt 1": "KILLED",
        "trial_t2": "FINISHED",
    }
    t0 = runs["trial_t0"].info.run_id
    assert [m.step for m in client.get_metric_history(t0, "val_loss")] == [1, 2, 3, 4]


def test_resume_ends_the_runs_of_trials_rays_snapshot_does_not_know_as_lost(tmp_path):
    """t1 and t2 ran after Ray's last snapshot (which knows only t0): the resumed sweep does not
    include them, so their runs end (t1 was open) tagged LOST, saying why."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dead = _dead_driver(uri)
    directory = tmp_path / "sweep"
    directory.mkdir()
    state = {"trial_data": [[json.dumps({"trial_id": "t0", "status": "RUNNING"}), "{}"]]}
    (directory / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    tracker = SweepTracker(uri, "reopened", interval_s=0.05)
    tracker.resume(dead.parent_run_id)
    assert mark_lost(str(directory), tracker) == {"t0"}
    assert set(tracker.trials) == {"t0"}
    tracker.end_sweep("FINISHED")

    runs = {r.info.run_name: r for r in MlflowClient(uri).search_runs([tracker.experiment_id])}
    status = {name: (r.info.status, r.data.tags.get("final_status")) for name, r in runs.items()}
    assert status == {
        "sweep": ("FINISHED", None),
        "trial_t0": ("KILLED", "INTERRUPTED"),
        "trial_t1": ("KILLED", "LOST"),
        "trial_t1 attempt 1": ("KILLED", None),
        "trial_t2": ("FINISHED", "LOST"),
    }
    assert runs["trial_t1"].data.tags["lost"].startswith("started after Ray's last snapshot")


def test_resume_by_real_id_and_of_a_run_that_never_reached_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dead = _dead_driver(uri)
    tracker = SweepTracker(uri, "reopened", interval_s=0.05)
    assert tracker.resume(dead.parent_run_id) == {"t0": (0, 3), "t1": (1, 2), "t2": (0, 0)}
    tracker.end_sweep("KILLED")
    fresh = SweepTracker(uri, "reopened")
    with pytest.raises(ConfigError, match="resume: the sweep's MLflow run pending-nothing never reached"):
        fresh.resume("pending-nothing")
    fresh.end_sweep("KILLED")
