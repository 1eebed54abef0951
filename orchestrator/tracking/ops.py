"""Operations on runs, as the driver queues them and the spool file keeps them, and their grouping.

The driver queues one op per call; :func:`group_ops` turns a run's per-step metric ops into
``log_batch``-sized batches without changing the order anything reaches a run in.
"""

from __future__ import annotations

import base64
import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_BATCH = 1000  # MLflow's limit of metrics per log_batch
_PARAMS_PER_BATCH = 100  # MLflow's limit of params per log_batch
_PARAM_CHARS = 6000  # MLflow's limit of a param value's length
WAVE_SCAN = 256  # how far into the queue a wave looks for ops on other runs


@dataclass
class _Op:
    """One thing to do on one run (``run`` is its handle). Kinds:
    ``create`` {name, tags, parent, start}; ``batch`` {metrics [[key, value, ts, step]], params, tags};
    ``end`` {status, end}; ``artifact`` {path, data (bytes)}; ``m`` (driver side only:
    (step, ts, metrics), grouped into ``batch`` by the writer)."""

    kind: str
    run: str
    data: Any
    seq: int = 0
    uncertain: bool = False  # an earlier try failed: it may have been applied

    def to_json(self) -> dict[str, Any]:
        """The op as one spool line: its data's fields beside seq, op, run and uncertain; bytes as base64."""
        data = dict(self.data)
        if self.kind == "artifact":
            data["data"] = base64.b64encode(data["data"]).decode("ascii")
        return {"seq": self.seq, "op": self.kind, "run": self.run, "uncertain": self.uncertain, **data}

    @staticmethod
    def from_json(line: dict[str, Any]) -> _Op:
        """The op a spool line holds (the inverse of :meth:`to_json`)."""
        data = {k: v for k, v in line.items() if k not in ("seq", "op", "run", "uncertain")}
        if line["op"] == "artifact":
            data["data"] = base64.b64decode(data["data"])
        return _Op(line["op"], line["run"], data, int(line["seq"]), bool(line.get("uncertain", False)))


def metric_batches(run: str, rows: list[list[Any]]) -> list[_Op]:
    """``rows`` ([key, value, timestamp, step]) as ``batch`` ops of at most 1000 metrics, in order."""
    return [_Op("batch", run, {"metrics": rows[i : i + _BATCH]}) for i in range(0, len(rows), _BATCH)]


def param_batches(run: str, params: dict[str, Any]) -> list[_Op]:
    """``params`` as ``batch`` ops of at most 100 params, each value as text cut to 6000 characters."""
    items = {k: _param_value(v) for k, v in params.items()}
    keys = list(items)
    return [
        _Op("batch", run, {"params": {k: items[k] for k in keys[i : i + _PARAMS_PER_BATCH]}})
        for i in range(0, len(keys), _PARAMS_PER_BATCH)
    ]


def end_ops(
    run: str, status: str, tags: dict[str, str] | None, metrics: dict[str, float] | None, now: int
) -> list[_Op]:
    """The ops that end a run at ``now`` (ms): its final metrics at step 0, its tags, then its end.

    A metric that is None or not finite is left out (a final summary, unlike a per-step value).
    """
    values = {k: float(v) for k, v in (metrics or {}).items() if v is not None}
    finite = [[k, v, now, 0] for k, v in values.items() if math.isfinite(v)]
    ops = metric_batches(run, finite)
    if tags:
        ops.append(_Op("batch", run, {"tags": {k: str(v) for k, v in tags.items()}}))
    ops.append(_Op("end", run, {"status": status, "end": now}))
    return ops


def _param_value(value: Any) -> str:
    """A param's value as MLflow keeps it: its text, cut to 6000 characters."""
    text = str(value)
    return text if len(text) <= _PARAM_CHARS else text[: _PARAM_CHARS - 3] + "..."


def next_wave(units: Iterable[_Op], width: int) -> list[_Op]:
    """The ops of ``units`` (the delivery queue, in order) that may go out together.

    Rule: an op goes only when no op queued before it is on its run (each run's ops stay in
    order, so a run is created before anything reaches it and ends after it all) and, for a
    ``create`` with a parent, when the parent's ops queued before it are all gone (the parent
    exists first). At most ``width`` ops, found among the first ``WAVE_SCAN``; the head of
    the queue is always among them.
    """
    chosen: list[_Op] = []
    earlier: set[str] = set()
    for op in itertools.islice(units, WAVE_SCAN):
        parent = op.data.get("parent") if op.kind == "create" else None
        if op.run not in earlier and parent not in earlier:
            chosen.append(op)
            if len(chosen) == width:
                break
        earlier.add(op.run)
    return chosen


def group_ops(ops: list[_Op]) -> list[_Op]:
    """Coalesce the per-step metric ops of each run into ``batch`` ops of at most 1000 metrics.

    Rule: a run's metrics go out before the next other op on that run (so a run ends after all
    its metrics), and every other op keeps its place, so a run is created before anything is
    logged to it and a parent before its children.
    """
    out: list[_Op] = []
    pending: dict[str, list[list[Any]]] = {}

    def emit(run: str) -> None:
        out.extend(metric_batches(run, pending.pop(run, [])))

    for op in ops:
        if op.kind == "m":
            step, ts, values = op.data
            rows = pending.setdefault(op.run, [])
            for key, value in values.items():
                try:
                    rows.append([key, float(value), ts, step])
                except (TypeError, ValueError):
                    logger.warning(
                        "MLflow: metric %s=%r at step %s is not a number; not logged", key, value, step
                    )
        else:
            emit(op.run)
            out.append(op)
    for run in list(pending):
        emit(run)
    return out
