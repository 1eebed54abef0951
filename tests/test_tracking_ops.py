"""The tracking package's pure parts, and spool replay and sweep reopening on a local SQLite store.

No server and no Ray: ops and their grouping are plain data; the URI parser is string work; replay and
reopening run against ``sqlite:///{tmp_path}/mlflow.db`` and are read back with ``MlflowClient``.
"""

import atexit
import json
import logging
import math
import os

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.errors import ConfigError
from orchestrator.tracking import (
    KEY_TAG,
    PARENT_TAG,
    SweepTracker,
    group_ops,
    main,
    replay,
    resolve_tracking_uri,
)
from orchestrator.tracking.ops import _Op

# ---------------------------------------------------------------------------------------------
# _Op: the spool's line format


@pytest.mark.parametrize(
    "op",
    [
        _Op("create", "pending-a", {"name": "sweep", "tags": {"k": "v"}, "parent": None, "start": 5}, 1),
        _Op("batch", "pending-a", {"metrics": [["val_loss", 0.5, 1001, 1]], "params": {"lr": "0.1"}}, 2),
        _Op("end", "pending-a", {"status": "FINISHED", "end": 9}, 3, uncertain=True),
        _Op("artifact", "pending-a", {"path": "plots/x.png", "data": b"\x89PNG\x00\xff\xfe raw"}, 4),
    ],
    ids=["create", "batch", "end", "artifact"],
)
def test_an_op_survives_its_json_line(op):
    line = json.loads(json.dumps(op.to_json()))  # what a spool file holds
    assert line["op"] == op.kind and line["run"] == op.run and line["seq"] == op.seq
    back = _Op.from_json(line)
    assert back == op
    if op.kind == "artifact":
        assert isinstance(line["data"], str)  # base64 text in the file
        assert isinstance(op.data["data"], bytes)  # to_json left the op alone


# ---------------------------------------------------------------------------------------------
# group_ops


def _m(run: str, step: int, **values) -> _Op:
    return _Op("m", run, (step, 1000 + step, values))


def _kinds(ops: list[_Op]) -> list[tuple[str, str]]:
    return [(op.kind, op.run) for op in ops]


def test_a_runs_metrics_go_out_before_its_next_other_op():
    ops = [
        _Op("create", "A", {"name": "a", "tags": {}, "parent": None}),
        _m("A", 1, loss=1.0),
        _Op("create", "B", {"name": "b", "tags": {}, "parent": None}),  # another run: A's metrics wait
        _m("A", 2, loss=0.5),
        _m("B", 1, loss=3.0),
        _Op("end", "A", {"status": "FINISHED"}),
    ]
    out = group_ops(ops)
    assert _kinds(out) == [("create", "A"), ("create", "B"), ("batch", "A"), ("end", "A"), ("batch", "B")]
    assert out[2].data == {"metrics": [["loss", 1.0, 1001, 1], ["loss", 0.5, 1002, 2]]}
    assert out[4].data == {"metrics": [["loss", 3.0, 1001, 1]]}  # left pending until the end


def test_other_ops_keep_their_order_and_a_parent_comes_before_its_children():
    ops = [
        _Op("create", "P", {"name": "p", "tags": {}, "parent": None}),
        _Op("batch", "P", {"params": {"n": "2"}}),
        _Op("create", "C1", {"name": "c1", "tags": {}, "parent": "P"}),
        _m("C1", 1, loss=1.0),
        _Op("create", "C2", {"name": "c2", "tags": {}, "parent": "P"}),
        _m("C2", 1, loss=2.0),
        _Op("batch", "C1", {"tags": {"final": "yes"}}),
        _Op("end", "C1", {"status": "FINISHED"}),
        _Op("artifact", "P", {"path": "a.txt", "data": b"x"}),
        _Op("end", "P", {"status": "FINISHED"}),
    ]
    out = group_ops(ops)
    others = [op for op in out if not (op.kind == "batch" and "metrics" in op.data)]
    assert others == [op for op in ops if op.kind != "m"]  # the same ops, in the same order
    assert [(op.kind, op.run, sorted(op.data)) for op in out] == [
        ("create", "P", ["name", "parent", "tags"]),
        ("batch", "P", ["params"]),
        ("create", "C1", ["name", "parent", "tags"]),
        ("create", "C2", ["name", "parent", "tags"]),
        ("batch", "C1", ["metrics"]),  # before C1's next op: its tags, then its end
        ("batch", "C1", ["tags"]),
        ("end", "C1", ["status"]),
        ("artifact", "P", ["data", "path"]),
        ("end", "P", ["status"]),
        ("batch", "C2", ["metrics"]),  # C2 has no later op: its metrics go out at the end
    ]


def test_metrics_are_sent_in_batches_of_at_most_1000():
    ops = [_Op("create", "A", {"name": "a", "tags": {}, "parent": None})]
    ops += [_m("A", step, loss=1.0 / step, acc=step / 2000) for step in range(1, 1251)]  # 2500 values
    ops.append(_Op("end", "A", {"status": "FINISHED"}))
    out = group_ops(ops)
    batches = [op for op in out if op.kind == "batch"]
    assert [len(op.data["metrics"]) for op in batches] == [1000, 1000, 500]
    rows = [row for op in batches for row in op.data["metrics"]]
    pairs = [(step, (("loss", 1.0 / step), ("acc", step / 2000))) for step in range(1, 1251)]
    expected = [[k, v, 1000 + step, step] for step, values in pairs for k, v in values]
    assert rows == expected  # every value once, in the order it was logged
    assert _kinds(out)[0] == ("create", "A") and _kinds(out)[-1] == ("end", "A")


def test_a_value_that_is_not_a_number_is_dropped_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="orchestrator.tracking")
    out = group_ops([_m("A", 3, loss=0.25, note="abc", missing=None, nan=float("nan"), count=7)])
    ((batch,),) = [out]
    keys = [row[0] for row in batch.data["metrics"]]
    assert keys == ["loss", "nan", "count"]  # non-finite numbers are kept as they are
    assert math.isnan(batch.data["metrics"][1][1]) and batch.data["metrics"][2][1] == 7.0
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2
    assert "note='abc' at step 3 is not a number" in said[0] and "missing=None" in said[1]


def test_nothing_to_group_gives_nothing():
    assert group_ops([]) == []
    assert group_ops([_m("A", 1, note="x")]) == []  # no number left: no empty batch


# ---------------------------------------------------------------------------------------------
# Tracking URIs


def test_no_uri_means_the_sqlite_store_in_the_launch_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.org:5000")
    assert resolve_tracking_uri(None, str(tmp_path)) == "http://example.org:5000"
    assert resolve_tracking_uri("sqlite:////abs/m.db", str(tmp_path)) == "sqlite:////abs/m.db"  # config wins


def test_a_relative_sqlite_path_is_made_absolute_against_the_launch_dir(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    assert resolve_tracking_uri("sqlite:///runs/m.db", str(tmp_path)) == f"sqlite:///{tmp_path}/runs/m.db"
    assert resolve_tracking_uri("sqlite:////data/m.db", str(tmp_path)) == "sqlite:////data/m.db"
    for kept in ("http://127.0.0.1:5000", "https://mlflow.example.org/", "file:///tmp/mlruns"):
        assert resolve_tracking_uri(kept, str(tmp_path)) == kept


@pytest.mark.parametrize(
    "uri, message",
    [
        ("mlflow.db", "tracking.uri: cannot use 'mlflow.db'"),
        ("notascheme://x", "tracking.uri: cannot use 'notascheme://x'"),
        ("ftp://host/x", "tracking.uri: cannot use 'ftp://host/x'"),
        ("http://", "tracking.uri: no host in 'http://'"),
        ("https:///path", "tracking.uri: no host in 'https:///path'"),
        ("sqlite://m.db", "tracking.uri: expected sqlite:///<path>, got 'sqlite://m.db'"),
        ("sqlite:///", "tracking.uri: expected sqlite:///<path>, got 'sqlite:///'"),
    ],
)
def test_a_uri_that_does_not_parse_is_a_config_error_naming_tracking_uri(tmp_path, uri, message):
    with pytest.raises(ConfigError) as caught:
        resolve_tracking_uri(uri, str(tmp_path))
    assert str(caught.value).startswith(message)


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


def test_replaying_a_spool_twice_duplicates_nothing(tmp_path):
    uri, client, exp = _store(tmp_path)
    spool, n = _spool(tmp_path, uri, exp)

    assert replay(spool) == (n, 0)
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
    assert replay(spool) == (n, 0)  # every op again, each one idempotent
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
