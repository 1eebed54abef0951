"""The spool file: what the writer could not deliver, as JSON lines, and the progress file of its replay.

``SPOOL`` starts with a header line ``{"spool": 1, "uri", "experiment_id", "resolved", "written"}``
(``resolved``: run handle -> the store's run id, as far as the writer knew them); every other
line is one op (:meth:`_Op.to_json`), in delivery order. ``SPOOL.done`` records a replay's
progress: ``{"run": handle, "run_id": id}`` for a run it created, then ``{"seq": n}`` for each
op it delivered. Nothing here talks to a store.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any, TextIO

from orchestrator.tracking.ops import _Op
from orchestrator.tracking.uri import sqlite_path


def _spool_name() -> str:
    """A spool file name unique to this writer: time, process and a random suffix."""
    return f"mlflow-spool-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"


def _default_spool_dir(uri: str) -> str:
    """Beside the SQLite file for a local store, else the launch directory."""
    path = sqlite_path(uri)
    if path is not None:
        return os.path.dirname(path) or os.getcwd()
    return os.getcwd()


def write_header(path: str, uri: str, experiment_id: str, resolved: dict[str, str]) -> None:
    """Start the spool file at ``path`` (its directory made if needed) with its header line."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    header = {
        "spool": 1,
        "uri": uri,
        "experiment_id": experiment_id,
        "resolved": dict(resolved),
        "written": time.time(),
    }
    with open(path, "w") as f:
        f.write(json.dumps(header) + "\n")


def append_ops(path: str, ops: Iterable[_Op]) -> None:
    """Append ``ops`` to the spool file, one line each, in the order given."""
    with open(path, "a") as f:
        for op in ops:
            f.write(json.dumps(op.to_json()) + "\n")


def read_spool(path: str) -> tuple[dict[str, Any], list[_Op]]:
    """The header and the ops of a spool file; ValueError if its first line is not a spool header."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or lines[0].get("spool") != 1:
        raise ValueError(f"{path}: not an MLflow spool file")
    return lines[0], [_Op.from_json(line) for line in lines[1:]]


def read_progress(done_path: str) -> tuple[set[int], dict[str, str]]:
    """What an earlier replay recorded in ``done_path``: the seqs it delivered and the runs it created.

    No file: nothing delivered yet.
    """
    done: set[int] = set()
    created: dict[str, str] = {}
    if os.path.exists(done_path):
        with open(done_path) as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    if "seq" in entry:
                        done.add(int(entry["seq"]))
                    else:
                        created[entry["run"]] = entry["run_id"]
    return done, created


def record_progress(out: TextIO, op: _Op, created_run_id: str | None) -> None:
    """Record in the open progress file that ``op`` was delivered (and the run it created), at once."""
    if created_run_id is not None:
        out.write(json.dumps({"run": op.run, "run_id": created_run_id}) + "\n")
    out.write(json.dumps({"seq": op.seq}) + "\n")
    out.flush()
