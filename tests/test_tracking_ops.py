"""The tracking package's pure parts: ops and their JSON lines, grouping and batching, URIs, the spool file.

No store, no server, no Ray: plain data in, plain data out (replay and reopening on a local
SQLite store are in test_tracking_replay.py).
"""

import importlib
import json
import logging
import math

import pytest

import orchestrator.tracking as tracking
from orchestrator.errors import ConfigError
from orchestrator.tracking import group_ops, resolve_tracking_uri, ui_hint
from orchestrator.tracking.ops import WAVE_SCAN, _Op, end_ops, next_wave, param_batches
from orchestrator.tracking.runs import unrepeated
from orchestrator.tracking.spool import (
    _default_spool_dir,
    append_ops,
    read_progress,
    read_spool,
    write_header,
)
from orchestrator.tracking.uri import LANES, delivery_lanes, is_http, sqlite_path

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


def test_params_go_out_100_at_a_time_as_text_cut_to_6000_characters():
    params = {f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000, "exact": "y" * 6000}
    batches = param_batches("R", params)
    assert [(op.kind, op.run, len(op.data["params"])) for op in batches] == [
        ("batch", "R", 100),
        ("batch", "R", 100),
        ("batch", "R", 52),
    ]
    sent = {k: v for op in batches for k, v in op.data["params"].items()}
    assert list(sent) == list(params) and sent["p007"] == "7"
    assert sent["long"] == "x" * 5997 + "..." and sent["exact"] == "y" * 6000


def test_a_run_ends_after_its_finite_final_metrics_and_its_tags():
    metrics = {"best": 0.5, "none": None, "nan": float("nan"), "inf": float("inf"), "n": 3}
    ops = end_ops("R", "FINISHED", {"final_status": "COMPLETED", "epochs": 4}, metrics, now=1234)
    assert [(op.kind, op.data) for op in ops] == [
        ("batch", {"metrics": [["best", 0.5, 1234, 0], ["n", 3.0, 1234, 0]]}),
        ("batch", {"tags": {"final_status": "COMPLETED", "epochs": "4"}}),
        ("end", {"status": "FINISHED", "end": 1234}),
    ]
    assert [op.kind for op in end_ops("R", "KILLED", None, None, now=1)] == ["end"]


# ---------------------------------------------------------------------------------------------
# Waves: which queued ops go out together


def _create(run: str, parent: str | None = None) -> _Op:
    return _Op("create", run, {"name": run.lower(), "tags": {}, "parent": parent})


def test_a_wave_takes_one_op_per_run_in_queue_order():
    queue = [_create("A"), _Op("batch", "A", {}), _create("B"), _Op("end", "A", {}), _create("C")]
    assert next_wave(queue, 4) == [queue[0], queue[2], queue[4]]  # A's later ops wait for its create
    assert next_wave(queue, 2) == [queue[0], queue[2]]
    assert next_wave(queue[1:], 4) == [queue[1], queue[2], queue[4]]  # A's batch before A's end


def test_a_child_is_created_only_once_nothing_of_its_parent_is_queued_before_it():
    queue = [_create("P"), _create("C1", parent="P"), _Op("batch", "P", {}), _create("C2", parent="P")]
    assert next_wave(queue, 4) == [queue[0]]
    rest = queue[1:]  # P created: C1 may go, C2 waits behind P's batch
    assert next_wave(rest, 4) == [queue[1], queue[2]]
    assert next_wave([_create("C3", parent="P")], 4) == [_create("C3", parent="P")]


def test_a_wave_looks_only_so_far_into_a_long_queue_and_always_takes_its_head():
    queue = [_Op("batch", "A", {"n": i}) for i in range(WAVE_SCAN)] + [_create("B")]
    assert next_wave(queue, 4) == [queue[0]]
    assert next_wave(queue[-2:], 4) == queue[-2:]
    assert next_wave([], 4) == []


# ---------------------------------------------------------------------------------------------
# The package's names


def test_an_attempts_constants_are_sent_once_per_run_and_again_only_when_they_change():
    sent: dict[str, float] = {}
    first = {"val_acc": 0.5, "attempt": 0.0, "seed": 7.0, "params": 1e4, "lr": 0.1}
    assert unrepeated(first, sent) == first
    assert unrepeated({**first, "val_acc": 0.6}, sent) == {"val_acc": 0.6, "lr": 0.1}
    assert unrepeated({**first, "lr": 0.1, "params": 2e4}, sent) == {"val_acc": 0.5, "lr": 0.1, "params": 2e4}
    assert unrepeated(first, {}) == first  # another run (a restart's) gets them again


def test_every_public_name_comes_from_its_module():
    for name in tracking.__all__:
        home = importlib.import_module(f"orchestrator.tracking.{tracking._HOMES[name]}")
        assert getattr(tracking, name) is getattr(home, name), name
    assert sorted(tracking._HOMES) == tracking.__all__
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        tracking.nothing  # noqa: B018 - the attribute access is the test


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


def test_one_parser_says_where_a_sqlite_file_is_and_what_is_a_server():
    assert sqlite_path("sqlite:////data/m.db") == "/data/m.db"
    assert sqlite_path("sqlite:///runs/m.db") == "runs/m.db"
    assert sqlite_path("sqlite:///") == ""
    for other in ("sqlite://m.db", "sqlite+pysqlite:///m.db", "http://h/sqlite:///x", "file:///m.db"):
        assert sqlite_path(other) is None, other
    assert is_http("http://127.0.0.1:5000") and is_http("https://mlflow.example.org")
    assert not is_http("sqlite:///m.db") and not is_http("file:///tmp") and not is_http("httpx://h")


def test_servers_and_database_servers_are_written_to_on_several_runs_at_once():
    for uri in (
        "http://127.0.0.1:5000",
        "https://m.example.org",
        "postgresql://u@h:5432/db",
        "mysql+pymysql://h/db",
    ):
        assert delivery_lanes(uri) == LANES > 1, uri
    for uri in ("sqlite:////tmp/m.db", "file:///tmp/mlruns", "databricks"):
        assert delivery_lanes(uri) == 1, uri


def test_the_ui_hint_and_the_spool_dir_follow_the_store(tmp_path, monkeypatch):
    view = "#/experiments/7?workflowType=machine_learning"
    assert ui_hint("http://h:5000/", "7") == f"http://h:5000/{view}"
    assert ui_hint("sqlite:////d/m.db", "7") == (
        f"mlflow ui --backend-store-uri sqlite:////d/m.db   then open http://127.0.0.1:5000/{view}"
    )
    monkeypatch.chdir(tmp_path)
    assert _default_spool_dir("sqlite:////data/x/m.db") == "/data/x"  # beside the database
    assert _default_spool_dir("sqlite:///m.db") == str(tmp_path)
    assert _default_spool_dir("http://h:5000") == str(tmp_path)  # else the launch directory


# ---------------------------------------------------------------------------------------------
# The spool file


def test_a_spool_file_reads_back_as_it_was_written(tmp_path):
    path = str(tmp_path / "deeper" / "spool.jsonl")
    ops = [
        _Op("create", "pending-a", {"name": "a", "tags": {}, "parent": None, "start": 1}, 1),
        _Op("artifact", "pending-a", {"path": "x.bin", "data": bytes(range(256))}, 2, uncertain=True),
    ]
    write_header(path, "http://h:1", "3", {"pending-z": "abc"})
    append_ops(path, ops[:1])
    append_ops(path, ops[1:])
    header, back = read_spool(path)
    assert {k: header[k] for k in ("spool", "uri", "experiment_id", "resolved")} == {
        "spool": 1,
        "uri": "http://h:1",
        "experiment_id": "3",
        "resolved": {"pending-z": "abc"},
    }
    assert back == ops
    assert read_progress(path + ".done") == (set(), {})  # no replay yet
