"""MLflow record of a sweep: a parent run per sweep, a child run per trial. The only mlflow importer.

Everything is logged from the driver, but the driver thread only enqueues: a background
writer creates the runs, sends metrics in ``log_batch`` calls (at most 1000 metrics each),
sets tags, ends runs and uploads text and figure artifacts, in the order they were asked
for per run. When the tracking store fails (server down, refused, 5xx, timeout) the writer
warns once, keeps everything in order and retries with backoff; what is still undelivered
when the sweep ends is written to a JSON-lines spool file that
``python -m orchestrator.tracking replay SPOOL`` delivers later, without duplicating a
metric step. No run is left RUNNING: :meth:`SweepTracker.close` ends whatever is still open.

Run ids: every run gets a client-side handle (``pending-...``) at once; the writer maps it to
the store's run id when the run is created. :attr:`SweepTracker.run_ids` and
:attr:`SweepTracker.parent_run_id` return the real id once known (waiting briefly while the
store is reachable) and the handle otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import logging
import math
import os
import posixpath
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.client import TrackingServiceClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.proto_json_utils import parse_dict
from mlflow.utils.rest_utils import augmented_raise_for_status, http_request, verify_rest_response

from orchestrator.errors import ConfigError
from orchestrator.redact import redact

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "orchestrator.run_key"  # the run's client-side handle: makes a retried create idempotent
_BATCH = 1000  # MLflow's limit of metrics per log_batch
_PARAMS_PER_BATCH = 100
_URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
_HANDLE_PREFIX = "pending-"
#: Seconds a flush at the end waits for an unreachable store before spooling (default 10).
GRACE_ENV = "ORCHESTRATOR_MLFLOW_GRACE_S"
#: Store errors that retrying cannot fix: the operation is skipped with a warning.
_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
    }
)


def resolve_tracking_uri(uri: str | None, launch_dir: str) -> str:
    """The tracking URI to use: ``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///<launch_dir>/mlflow.db``.

    A relative SQLite path is made absolute against ``launch_dir`` (trials and servers run
    elsewhere). Raises ConfigError naming ``tracking.uri`` for a URI that does not parse.
    """
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if chosen is None:
        return f"sqlite:///{os.path.join(os.path.abspath(launch_dir), 'mlflow.db')}"
    parsed = urlparse(chosen)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in _URI_SCHEMES:
        raise ConfigError(
            f"tracking.uri: cannot use {chosen!r} (expected a URI such as sqlite:///path/mlflow.db "
            f"or http://127.0.0.1:5000)"
        )
    if scheme in ("http", "https") and not parsed.hostname:
        raise ConfigError(f"tracking.uri: no host in {chosen!r}")
    if scheme == "sqlite":
        path = chosen[len("sqlite:///") :] if chosen.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"tracking.uri: expected sqlite:///<path>, got {chosen!r}")
        if not os.path.isabs(path):
            return f"sqlite:///{os.path.join(os.path.abspath(launch_dir), path)}"
    return chosen


def log_pytorch_model(
    uri: str,
    run_id: str,
    model: Any,
    input_example: Any,
    *,
    registered_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Log a PyTorch model (with an input example, hence a signature) to ``run_id``; return its URI.

    With ``registered_name`` the model is also registered in the Model Registry. The model's
    code (the ``trainables`` package) travels with it, so it loads where the project is not
    installed; its requirements are MLflow's defaults for the flavour (torch, cloudpickle at
    the installed versions; inferring them costs ~10 s). Imports ``mlflow.pytorch`` (and so
    torch): call it from a worker or an export subprocess.
    """
    import mlflow
    import mlflow.pytorch

    import trainables

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=input_example,
            registered_model_name=registered_name,
            tags=tags or None,
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
            code_paths=[os.path.dirname(trainables.__file__)],
        )
    return info.model_uri


def ui_hint(uri: str, experiment_id: str) -> str:
    """How a user opens the sweep in the MLflow UI (model-training view of the experiment)."""
    view = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{view}"
    return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{view}"


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


# ---------------------------------------------------------------------------------------------
# A client whose requests fail fast: the writer does its own retrying, in order.


class _BoundedRestStore(RestStore):
    """A REST store that sends each request once with a short timeout (MLflow's default retries
    a refused connection for minutes); only the writer's client uses it, no setting changes."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        super().__init__(lambda: get_default_host_creds(uri))
        self.timeout_s = timeout_s

    def _call_endpoint(
        self, api, json_body=None, endpoint=None, retry_timeout_seconds=None, response_proto=None
    ):  # type: ignore[no-untyped-def]  # noqa: E501
        info = self._V3_METHOD_TO_INFO if api in self._V3_APIS else self._METHOD_TO_INFO
        self._validate_workspace_support_if_specified()
        default_endpoint, method = info[api]
        endpoint = endpoint or default_endpoint
        body = json.loads(json_body) if json_body is not None else None
        response = http_request(
            self.get_host_creds(),
            endpoint,
            method,
            max_retries=0,
            backoff_factor=0,
            backoff_jitter=0,
            timeout=self.timeout_s,
            **({"params": body} if method == "GET" else {"json": body}),
        )
        response = verify_rest_response(response, endpoint)
        response_proto = response_proto or api.Response()
        if response.status_code == 204:
            return response_proto
        parse_dict(js_dict=json.loads(response.text), message=response_proto)
        return response_proto


class _BoundedTrackingClient(TrackingServiceClient):
    def __init__(self, uri: str, timeout_s: float) -> None:
        self._bounded = _BoundedRestStore(uri, timeout_s)
        super().__init__(uri)

    @property
    def store(self) -> RestStore:  # type: ignore[override]
        return self._bounded


def _client(uri: str, timeout_s: float) -> MlflowClient:
    """An MlflowClient; for an HTTP server, one whose requests are sent once with ``timeout_s``."""
    client = MlflowClient(tracking_uri=uri)
    if uri.startswith(("http://", "https://")):
        client._tracking_client = _BoundedTrackingClient(uri, timeout_s)
    return client


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: the store could not be reached or failed on its side (5xx, 408, 429, timeouts).

    An MLflow error that names a bad request (invalid value, missing run, ...) is permanent.
    """
    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT_CODES
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        return code >= 500 or code in (408, 429)
    return True


def _short(exc: BaseException) -> str:
    """The gist of a store error: connection refused / timed out, else its first 160 characters."""
    text = " ".join(str(exc).split())
    for marker, gist in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Failed to establish", "cannot connect"),
        ("RemoteDisconnected", "connection closed"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection aborted"),
    ):
        if marker in text:
            return gist
    return text if len(text) <= 160 else text[:157] + "..."


# ---------------------------------------------------------------------------------------------
# Operations and their delivery


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
        data = dict(self.data)
        if self.kind == "artifact":
            data["data"] = base64.b64encode(data["data"]).decode("ascii")
        return {"seq": self.seq, "op": self.kind, "run": self.run, "uncertain": self.uncertain, **data}

    @staticmethod
    def from_json(line: dict[str, Any]) -> _Op:
        data = {k: v for k, v in line.items() if k not in ("seq", "op", "run", "uncertain")}
        if line["op"] == "artifact":
            data["data"] = base64.b64decode(data["data"])
        return _Op(line["op"], line["run"], data, int(line["seq"]), bool(line.get("uncertain", False)))


def group_ops(ops: list[_Op]) -> list[_Op]:
    """Coalesce the per-step metric ops of each run into ``batch`` ops of at most 1000 metrics.

    Rule: a run's metrics go out before the next other op on that run (so a run ends after all
    its metrics), and every other op keeps its place, so a run is created before anything is
    logged to it and a parent before its children.
    """
    out: list[_Op] = []
    pending: dict[str, list[list[Any]]] = {}

    def emit(run: str) -> None:
        metrics = pending.pop(run, None)
        for i in range(0, len(metrics or ()), _BATCH):
            out.append(_Op("batch", run, {"metrics": metrics[i : i + _BATCH]}))  # type: ignore[index]

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


class _Deliverer:
    """Applies ops to the store. Idempotent where a retry could repeat an op: a create that may
    have happened looks its run up by its handle tag; metrics that may have been logged are
    compared with the run's history (key, step, timestamp) first."""

    def __init__(self, client: MlflowClient, experiment_id: str, resolved: dict[str, str]) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.resolved = resolved  # handle -> run id
        self.fresh: set[str] = set()  # runs this deliverer created: nothing to deduplicate there

    def run_id(self, handle: str) -> str:
        try:
            return self.resolved[handle]
        except KeyError:
            message = f"run {handle} was never created"
            raise MlflowException(message, error_code="RESOURCE_DOES_NOT_EXIST") from None

    def deliver(self, op: _Op) -> None:
        data = op.data
        if op.kind == "create":
            self._create(op)
        elif op.kind == "batch":
            run_id = self.run_id(op.run)
            metrics = data.get("metrics") or []
            if metrics and op.uncertain and run_id not in self.fresh:
                metrics = self._unlogged(run_id, metrics)
            params = [Param(k, v) for k, v in (data.get("params") or {}).items()]
            tags = [RunTag(k, v) for k, v in (data.get("tags") or {}).items()]
            entities = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
            self.client.log_batch(run_id, metrics=entities, params=params, tags=tags)
        elif op.kind == "end":
            self.client.set_terminated(self.run_id(op.run), status=data["status"], end_time=data.get("end"))
        elif op.kind == "artifact":
            self._upload(self.run_id(op.run), data["path"], data["data"])
        else:
            raise ValueError(f"unknown tracking operation {op.kind!r}")

    def _create(self, op: _Op) -> None:
        if op.run in self.resolved:
            return
        data = op.data
        if op.uncertain:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{op.run}'", max_results=1
            )
            if found:
                self.resolved[op.run] = found[0].info.run_id
                return
        tags = {**data["tags"], KEY_TAG: op.run}
        if data.get("parent"):
            tags[PARENT_TAG] = self.run_id(data["parent"])
        run = self.client.create_run(
            self.experiment_id, start_time=data.get("start"), tags=tags, run_name=data.get("name")
        )
        self.resolved[op.run] = run.info.run_id
        self.fresh.add(run.info.run_id)

    def _unlogged(self, run_id: str, metrics: list[list[Any]]) -> list[list[Any]]:
        """The metrics not already in the run's history (same key, step and timestamp)."""
        seen: set[tuple[str, int, int]] = set()
        for key in {m[0] for m in metrics}:
            seen.update((key, h.step, h.timestamp) for h in self.client.get_metric_history(run_id, key))
        return [m for m in metrics if (m[0], m[3], m[2]) not in seen]

    def _upload(self, run_id: str, path: str, data: bytes) -> None:
        directory, name = posixpath.split(path)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            with open(local, "wb") as f:
                f.write(data)
            repo = self.client._tracking_client._get_artifact_repo(run_id)
            if not isinstance(repo, HttpArtifactRepository):
                repo.log_artifact(local, directory or None)
                return
            # the server's artifact proxy: one PUT, sent once (the repository's own retries take minutes)
            timeout = getattr(self.client._tracking_client.store, "timeout_s", 30)
            endpoint = posixpath.join("/", *((directory, name) if directory else (name,)))
            with open(local, "rb") as f:
                resp = http_request(
                    repo._host_creds,
                    endpoint,
                    "PUT",
                    data=f,
                    max_retries=0,
                    backoff_factor=0,
                    backoff_jitter=0,
                    timeout=timeout,
                    extra_headers={"Content-Type": _mime(name)},
                )
            augmented_raise_for_status(resp)


def _mime(name: str) -> str:
    if name.endswith(".png"):
        return "image/png"
    if name.endswith((".json",)):
        return "application/json"
    return "text/plain"


# ---------------------------------------------------------------------------------------------
# The background writer


class _Writer:
    """Delivers the driver's ops in the background, in order; spools what it cannot deliver.

    The driver only appends to a deque. Every ``interval_s`` (or at once on :meth:`flush`)
    the writer groups what arrived and delivers it op by op. On a transient failure it keeps
    the op at the head, warns once, and retries with backoff (0.5 s doubling to 5 s). Once
    :meth:`spool` has run, everything (queued then and later) goes to the spool file instead.
    """

    def __init__(self, deliverer: _Deliverer, uri: str, spool_path: str, interval_s: float) -> None:
        self.deliverer = deliverer
        self.uri = uri
        self.spool_path = spool_path
        self.interval_s = interval_s
        self.inbox: deque[_Op] = deque()  # driver -> writer; deque appends are atomic
        self.units: deque[_Op] = deque()  # grouped, in delivery order; writer-owned
        self.seq = 0
        self.delivered = 0
        self.outage_since: float | None = None
        self.spooled = False
        self.wake = threading.Event()
        self.changed = threading.Condition()  # notified after each pass (flush and id waits)
        self.lock = threading.Lock()  # held while one op is delivered or the queue is spooled
        self.busy = False
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="mlflow-writer", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread once the current pass is done (call after a flush; anything queued
        later is spooled by the next flush). A writer thread left running into interpreter
        shutdown could touch a store being torn down."""
        self.stopping = True
        self.wake.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- driver side
    def put(self, op: _Op) -> None:
        self.inbox.append(op)

    def pending(self) -> int:
        return len(self.inbox) + len(self.units)

    def idle(self) -> bool:
        return not self.inbox and not self.units and not self.busy

    # -- writer thread
    def _loop(self) -> None:
        delay = 0.5
        while True:
            self.wake.wait(self.interval_s if self.outage_since is None else delay)
            self.wake.clear()
            if self.stopping:
                with self.changed:
                    self.changed.notify_all()
                return
            try:
                ok = self._pass()
            except Exception:  # noqa: BLE001 - the writer must outlive any bug in one pass
                logger.exception("MLflow writer: unexpected error; will retry")
                ok = False
            delay = 0.5 if ok else min(delay * 2, 5.0)
            with self.changed:
                self.changed.notify_all()

    def _take(self) -> None:
        ops = []
        while self.inbox:
            ops.append(self.inbox.popleft())
        for op in group_ops(ops):
            self.seq += 1
            op.seq = self.seq
            self.units.append(op)

    def _pass(self) -> bool:
        """Deliver (or spool) what is queued; False when the store failed and the rest waits."""
        with self.lock:
            self.busy = True
            try:
                self._take()
                if self.spooled:
                    self._append_spool()
                    return True
            finally:
                self.busy = bool(self.units)
        while True:
            with self.lock:
                if self.spooled or not self.units:
                    break
                op = self.units[0]
                try:
                    self.deliverer.deliver(op)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if _is_transient(exc):
                        op.uncertain = True
                        self._down(exc)
                        return False
                    logger.warning("MLflow refused %s on run %s (%s); skipped", op.kind, op.run, _short(exc))
                self.units.popleft()
                self.delivered += 1
                self.busy = bool(self.units)
        if self.outage_since is not None and not self.spooled:
            logger.warning(
                "MLflow at %s reachable again after %.0fs; queued operations delivered",
                self.uri,
                time.monotonic() - self.outage_since,
            )
            self.outage_since = None
        return True

    def _down(self, exc: BaseException) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            logger.warning(
                "MLflow at %s unreachable (%s); %d operations queued, spooling to %s if it is still "
                "down at the end; will retry",
                self.uri,
                _short(exc),
                self.pending(),
                self.spool_path,
            )
        else:
            logger.debug("MLflow still unreachable: %s", _short(exc))

    # -- spooling (any thread)
    def spool(self) -> int:
        """Write everything undelivered to the spool file; later ops are appended there too."""
        with self.lock:
            self._take()
            if not self.spooled:
                os.makedirs(os.path.dirname(self.spool_path) or ".", exist_ok=True)
                header = {
                    "spool": 1,
                    "uri": self.uri,
                    "experiment_id": self.deliverer.experiment_id,
                    "resolved": dict(self.deliverer.resolved),
                    "written": time.time(),
                }
                with open(self.spool_path, "w") as f:
                    f.write(json.dumps(header) + "\n")
                self.spooled = True
            return self._append_spool()

    def _append_spool(self) -> int:
        n = len(self.units)
        if n:
            with open(self.spool_path, "a") as f:
                for op in self.units:
                    f.write(json.dumps(op.to_json()) + "\n")
            self.units.clear()
        self.busy = False
        return n


# ---------------------------------------------------------------------------------------------
# The tracker


@dataclass
class _OpenRun:
    run_id: str  # the run's handle; SweepTracker resolves it to the store's id


@dataclass
class _TrialRuns:
    """A trial's run (attempt 0 logs there) and the nested runs of its restarts."""

    main: _OpenRun
    attempts: dict[int, _OpenRun] = field(default_factory=dict)

    def current(self, attempt: int) -> _OpenRun:
        return self.attempts.get(attempt, self.main) if attempt > 0 else self.main

    def all(self) -> list[_OpenRun]:
        return [*self.attempts.values(), self.main]


class _RunIds(Mapping[str, str]):
    """trial id -> the trial's run id (the real one once the store has it, else its handle)."""

    def __init__(self, tracker: SweepTracker) -> None:
        self._tracker = tracker
        self._handles: dict[str, str] = {}

    def __getitem__(self, trial_id: str) -> str:
        return self._tracker._resolve(self._handles[trial_id])

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._handles

    def __iter__(self) -> Iterator[str]:
        return iter(self._handles)

    def __len__(self) -> int:
        return len(self._handles)


def _timed(method: Any) -> Any:
    """Adds the call's duration to ``self.driver_seconds`` (the driver's cost of tracking)."""

    def wrapper(self: SweepTracker, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.driver_seconds += time.perf_counter() - started

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class SweepTracker:
    """Records one sweep in MLflow: ``start_sweep``, per trial ``start_trial`` / ``log_metrics`` /
    ``end_trial``, then ``end_sweep``.

    Calls only enqueue; a background writer delivers (see the module doc). ``driver_seconds``
    is the time the driver spent in these calls (waits in :meth:`flush` not counted),
    ``results_logged`` the number of :meth:`log_metrics` calls.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        spool_dir: str | None = None,
        timeout_s: float = 10.0,
        interval_s: float = 0.5,
        outage_grace_s: float | None = None,
    ) -> None:
        self.uri = uri
        self.client = _client(uri, timeout_s)
        try:
            self.experiment_id = self._experiment(experiment)
        except MlflowException as exc:
            if not _is_transient(exc):
                raise
            raise ConfigError(f"tracking.uri: MLflow at {uri} is unreachable ({_short(exc)})") from None
        self.parent: _OpenRun | None = None
        self.trials: dict[str, _TrialRuns] = {}  # trial id -> its open runs
        self.run_ids = _RunIds(self)  # trial id -> child run id, open or ended
        if outage_grace_s is None:  # how long the end of a sweep waits for an unreachable store
            outage_grace_s = float(os.environ.get(GRACE_ENV, "10"))
        self.outage_grace_s = outage_grace_s
        self.driver_seconds = 0.0
        self.results_logged = 0
        self.spool_path = os.path.join(spool_dir or _default_spool_dir(uri), _spool_name())
        self._resolved: dict[str, str] = {}
        self._timeout_s, self._interval_s = timeout_s, interval_s
        self._owns_parent = True  # False in a pickled copy: only the driver's tracker ends the sweep's run
        self._live_writer: _Writer | None = None
        _ = self._writer  # the original starts its writer now; a pickled copy on first use

    @property
    def _writer(self) -> _Writer:
        """The background writer, started on first use (a pickled copy starts its own there)."""
        if self._live_writer is None:
            if self.client is None:
                self.client = _client(self.uri, self._timeout_s)
            deliverer = _Deliverer(self.client, self.experiment_id, self._resolved)
            self._live_writer = _Writer(deliverer, self.uri, self.spool_path, self._interval_s)
            atexit.register(self._at_exit)
        return self._live_writer

    def __getstate__(self) -> dict[str, Any]:
        """A pickled copy records into the same store, experiment and parent run from wherever it is
        unpickled (a Tuner running on a Ray cluster over ``ray://``): it carries the run ids known so
        far, not the client or the writer thread. Its writer starts on its first log call; call
        :meth:`end_copy` there before it is sent back, and :meth:`adopt` it in the driver."""
        if self.parent is not None and self._live_writer is not None:
            self._resolve(self.parent.run_id)  # its child runs need the parent's real id
        state = self.__dict__.copy()
        state.update(client=None, _live_writer=None, _resolved=dict(self._resolved), _owns_parent=False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.spool_path = os.path.join(os.path.dirname(self.spool_path), _spool_name())  # a file per writer

    def end_copy(self) -> None:
        """In a pickled copy, where it ran: end the trial runs it left open (KILLED) and deliver
        (or spool) everything, then stop its writer; the parent run stays open for the driver."""
        if self._live_writer is None:
            return
        self.close("KILLED")
        self._live_writer.stop()
        atexit.unregister(self._at_exit)

    def adopt(self, copy: SweepTracker) -> None:
        """Take over what a pickled copy of this tracker recorded (see :meth:`__getstate__`): its
        trials' run ids, any run it left open (ended by :meth:`end_sweep`) and its counts."""
        self._resolved.update(copy._resolved)
        self.run_ids._handles.update(copy.run_ids._handles)
        self.trials.update(copy.trials)
        self.results_logged, self.driver_seconds = copy.results_logged, copy.driver_seconds

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            db_dir = os.path.dirname(self.uri[len("sqlite:///") :])
            location = "file://" + os.path.join(db_dir, "mlartifacts")
        return self.client.create_experiment(name, artifact_location=location)

    # -- ids
    def _new_run(self, name: str, tags: dict[str, str], parent: str | None) -> str:
        handle = _HANDLE_PREFIX + uuid.uuid4().hex
        data = {"name": name, "tags": {k: str(v) for k, v in tags.items()}, "parent": parent}
        self._writer.put(_Op("create", handle, {**data, "start": int(time.time() * 1000)}))
        return handle

    def _resolve(self, handle: str, wait_s: float = 10.0) -> str:
        """The store's id of ``handle``; waits up to ``wait_s`` for it while the store is reachable."""
        if handle in self._resolved:
            return self._resolved[handle]
        writer = self._writer
        deadline = time.monotonic() + wait_s
        writer.wake.set()
        with writer.changed:
            while handle not in self._resolved and writer.outage_since is None and not writer.spooled:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                writer.changed.wait(min(left, 0.5))
        return self._resolved.get(handle, handle)

    @property
    def parent_run_id(self) -> str | None:
        return self._resolve(self.parent.run_id) if self.parent else None

    # -- the record
    @_timed
    def start_sweep(
        self, name: str, params: dict[str, Any], tags: dict[str, str], artifacts: dict[str, str]
    ) -> str:
        """Create the parent run with the sweep's params, tags and text artifacts; return its id or handle."""
        handle = self._new_run(name, tags, None)
        self.parent = _OpenRun(handle)
        self._log_params(handle, params)
        for path, text in artifacts.items():
            self._artifact(handle, path, text.encode("utf-8"))
        return self._resolved.get(handle, handle)

    def resume(self, parent_run_id: str) -> dict[str, tuple[int, int]]:
        """Continue a sweep whose driver died: reopen its parent run and its unfinished trials'
        runs (and their restarts' runs) instead of creating new ones.

        Returns each trial's (latest attempt, last step logged there), so nothing is logged twice.
        """

        def children(run_id: str) -> list[Any]:
            found = f"tags.`{PARENT_TAG}` = '{run_id}'"
            return self.client.search_runs([self.experiment_id], filter_string=found, max_results=10000)

        def last_step(run_id: str) -> int:
            return max((m.step for m in self.client.get_metric_history(run_id, "val_loss")), default=0)

        def reopen(run_id: str) -> _OpenRun:
            self._resolved[run_id] = run_id
            self.client.update_run(run_id, status="RUNNING")
            return _OpenRun(run_id)

        if parent_run_id.startswith(_HANDLE_PREFIX):  # the store was down when the sweep started
            found = f"tags.`{KEY_TAG}` = '{parent_run_id}'"
            runs = self.client.search_runs([self.experiment_id], filter_string=found, max_results=1)
            if not runs:
                raise ConfigError(f"resume: the sweep's MLflow run {parent_run_id} never reached {self.uri}")
            parent_run_id = runs[0].info.run_id
        self.parent = reopen(parent_run_id)
        logged: dict[str, tuple[int, int]] = {}
        for run in children(parent_run_id):
            trial_id, run_id = run.data.tags.get("trial_id"), run.info.run_id
            if trial_id is None:
                continue
            self._resolved[run_id] = run_id
            self.run_ids._handles[trial_id] = run_id
            nested = {int(r.data.tags.get("attempt", 0)): r.info.run_id for r in children(run_id)}
            attempt = max(nested, default=0)
            logged[trial_id] = (attempt, last_step(nested.get(attempt, run_id)))
            if run.info.status in ("FINISHED", "FAILED"):
                continue
            runs = _TrialRuns(reopen(run_id))
            runs.attempts = {a: reopen(r) for a, r in nested.items()}
            self.trials[trial_id] = runs
        return logged

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Every params dict logged goes through here (``run_id`` is the run's handle)."""
        items = {k: _param_value(v) for k, v in redact(params).items()}  # secrets masked
        keys = list(items)
        for i in range(0, len(keys), _PARAMS_PER_BATCH):
            chunk = {k: items[k] for k in keys[i : i + _PARAMS_PER_BATCH]}
            self._writer.put(_Op("batch", run_id, {"params": chunk}))

    def _artifact(self, run_id: str, path: str, data: bytes) -> None:
        self._writer.put(_Op("artifact", run_id, {"path": path, "data": data}))

    @_timed
    def start_trial(
        self, trial_id: str, name: str, params: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
        """Create the trial's child run under the parent (once; later calls return it)."""
        if trial_id in self.run_ids._handles:
            handle = self.run_ids._handles[trial_id]
            return self._resolved.get(handle, handle)
        parent = self.parent.run_id if self.parent else None
        handle = self._new_run(name, {"trial_id": trial_id, **(tags or {})}, parent)
        self.trials[trial_id] = _TrialRuns(_OpenRun(handle))
        self.run_ids._handles[trial_id] = handle
        self._log_params(handle, params)
        return self._resolved.get(handle, handle)

    @_timed
    def start_attempt(self, trial_id: str, attempt: int, name: str, tags: dict[str, str]) -> str:
        """Create the nested run of a restart (attempt >= 1) under the trial's run (once)."""
        runs = self.trials[trial_id]
        if attempt not in runs.attempts:
            all_tags = {"trial_id": trial_id, "attempt": str(attempt), **tags}
            runs.attempts[attempt] = _OpenRun(self._new_run(name, all_tags, runs.main.run_id))
        handle = runs.attempts[attempt].run_id
        return self._resolved.get(handle, handle)

    @_timed
    def set_tags(self, trial_id: str, tags: dict[str, str], attempt: int = 0) -> None:
        """Tags on the run of a trial's attempt (0: the trial's own run)."""
        run = self.trials[trial_id].current(attempt).run_id
        self._writer.put(_Op("batch", run, {"tags": {k: str(v) for k, v in tags.items()}}))

    def log_metrics(self, trial_id: str, metrics: dict[str, float], step: int, attempt: int = 0) -> None:
        """Queue one step of an attempt's metrics; non-finite values are kept as they are."""
        started = time.perf_counter()
        run = self.trials[trial_id].current(attempt).run_id
        self._writer.put(_Op("m", run, (int(step), int(time.time() * 1000), dict(metrics))))
        self.results_logged += 1
        self.driver_seconds += time.perf_counter() - started

    @_timed
    def end_trial(
        self,
        trial_id: str,
        status: str,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """End the trial's restarts' runs, set its final tags, end its run (after all its metrics)."""
        runs = self.trials.pop(trial_id, None)
        if runs is None:
            return
        for open_run in runs.attempts.values():
            self._writer.put(_Op("end", open_run.run_id, {"status": status, "end": int(time.time() * 1000)}))
        self._finish(runs.main.run_id, status, tags, metrics)
        self._writer.wake.set()  # deliver the ended trial soon

    def _finish(
        self, run_id: str, status: str, tags: dict[str, str] | None, metrics: dict[str, float] | None
    ) -> None:
        now = int(time.time() * 1000)
        values = {k: float(v) for k, v in (metrics or {}).items() if v is not None}
        finite = [[k, v, now, 0] for k, v in values.items() if math.isfinite(v)]
        for i in range(0, len(finite), _BATCH):
            self._writer.put(_Op("batch", run_id, {"metrics": finite[i : i + _BATCH]}))
        if tags:
            self._writer.put(_Op("batch", run_id, {"tags": {k: str(v) for k, v in tags.items()}}))
        self._writer.put(_Op("end", run_id, {"status": status, "end": now}))

    def end_sweep(
        self, status: str, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None
    ) -> None:
        """End open trial runs (KILLED unless already ended), then the parent run; wait until
        everything is delivered or spooled. Adds ``mlflow_driver_ms_per_result`` to the metrics."""
        self._end_open_trials("KILLED")
        if self.parent is not None:
            cost = {
                "mlflow_driver_ms_per_result": self.ms_per_result(),
                "mlflow_results_logged": self.results_logged,
            }
            self._finish(self.parent.run_id, status, tags, {**(metrics or {}), **cost})
            self.parent = None
        self.flush()
        self._writer.stop()

    def close(self, status: str) -> None:
        """End every trial run still open with ``status`` (never leaves a run RUNNING), then flush."""
        self._end_open_trials(status)
        self.flush()

    def _end_open_trials(self, status: str) -> None:
        for trial_id in list(self.trials):
            self.end_trial(trial_id, status, {"final_status": "INTERRUPTED"})

    def ms_per_result(self) -> float:
        """Driver milliseconds spent in tracking calls per logged result so far."""
        return 1000.0 * self.driver_seconds / max(1, self.results_logged)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is delivered (True) or, when the store stays unreachable
        for ``outage_grace_s`` or ``timeout`` passes, written to the spool file (False)."""
        started = time.monotonic()
        writer = self._writer
        if not writer.thread.is_alive():  # stopped (or died): nothing left to wait for
            return writer.pending() == 0 or writer.spool() == 0
        deadline = None if timeout is None else started + timeout
        writer.wake.set()
        with writer.changed:
            while not writer.idle() and not writer.spooled:
                now = time.monotonic()
                down_for = now - max(started, writer.outage_since or now) if writer.outage_since else 0.0
                if (deadline is not None and now >= deadline) or down_for >= self.outage_grace_s:
                    break
                writer.changed.wait(0.2)
                writer.wake.set()
        if writer.idle() and not writer.spooled:
            return True
        n = writer.spool()
        if n:
            logger.warning(
                "MLflow at %s still unreachable: %d operations written to %s; deliver them later with: "
                "python -m orchestrator.tracking replay %s",
                self.uri,
                n,
                self.spool_path,
                self.spool_path,
            )
        return False

    def _at_exit(self) -> None:
        """At interpreter exit: end what is still open (KILLED) and deliver or spool everything."""
        try:
            if self.parent is not None and self._owns_parent:
                self.end_sweep("KILLED", {"final_status": "INTERRUPTED"})
            self._end_open_trials("KILLED")
            if self._writer.pending():
                self.flush()
        except Exception:  # noqa: BLE001 - at exit, say what failed and go on
            logger.exception("MLflow: could not flush the record at exit")
        finally:
            self._writer.stop()


class StoreOpening:
    """``SweepTracker(uri, experiment)`` made in a thread (opening a new SQLite store runs its
    schema migrations, ~2 s) while the caller does other work (Ray starts).

    :meth:`tracker` waits for it and returns it, or raises what the constructor raised;
    :meth:`discard` stops a tracker that will not be used (it made no run).
    """

    def __init__(self, uri: str, experiment: str) -> None:
        self._future: Future[SweepTracker] = Future()

        def open_store() -> None:
            try:
                self._future.set_result(SweepTracker(uri, experiment))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by tracker()
                self._future.set_exception(exc)

        threading.Thread(target=open_store, name="mlflow-store", daemon=True).start()

    def tracker(self) -> SweepTracker:
        return self._future.result()

    def discard(self) -> None:
        if self._future.exception() is None:
            self._future.result().end_sweep("FAILED")  # no run was made: this stops its writer


def _spool_name() -> str:
    """A spool file name unique to this writer: time, process and a random suffix."""
    return f"mlflow-spool-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"


def _default_spool_dir(uri: str) -> str:
    """Beside the SQLite file for a local store, else the launch directory."""
    if uri.startswith("sqlite:///"):
        return os.path.dirname(uri[len("sqlite:///") :]) or os.getcwd()
    return os.getcwd()


# ---------------------------------------------------------------------------------------------
# Replay: python -m orchestrator.tracking replay SPOOL


def replay(path: str, uri: str | None = None, timeout_s: float = 30.0) -> tuple[int, int]:
    """Deliver a spool file's ops in order; return (delivered now, still undelivered).

    Progress is kept beside it in ``SPOOL.done`` (delivered seqs and created runs), and every op
    is delivered idempotently (a run is looked up by its handle tag before it is created, metrics
    already in the run's history are left out), so running it again after a partial delivery
    duplicates nothing. Stops at the first transient failure.
    """
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or lines[0].get("spool") != 1:
        raise ValueError(f"{path}: not an MLflow spool file")
    header, ops = lines[0], [_Op.from_json(line) for line in lines[1:]]
    done_path = path + ".done"
    done: set[int] = set()
    resolved = dict(header.get("resolved") or {})
    if os.path.exists(done_path):
        with open(done_path) as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    if "seq" in entry:
                        done.add(int(entry["seq"]))
                    else:
                        resolved[entry["run"]] = entry["run_id"]
    deliverer = _Deliverer(_client(uri or header["uri"], timeout_s), header["experiment_id"], resolved)
    delivered = 0
    todo = [op for op in ops if op.seq not in done]
    with open(done_path, "a") as out:
        for i, op in enumerate(todo):
            op.uncertain = True  # a previous replay may have applied it without recording so
            try:
                deliverer.deliver(op)
            except Exception as exc:  # noqa: BLE001 - classified below
                if _is_transient(exc):
                    logger.warning("MLflow at %s unreachable (%s)", uri or header["uri"], _short(exc))
                    return delivered, len(todo) - i
                logger.warning("MLflow refused %s on run %s (%s); skipped", op.kind, op.run, _short(exc))
            if op.kind == "create" and op.run in resolved:
                out.write(json.dumps({"run": op.run, "run_id": resolved[op.run]}) + "\n")
            out.write(json.dumps({"seq": op.seq}) + "\n")
            out.flush()
            delivered += 1
    return delivered, 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="deliver a spool file written while the tracking store was down")
    rp.add_argument("spool")
    rp.add_argument("--uri", default=None, help="tracking URI (default: the one in the spool file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        delivered, left = replay(args.spool, args.uri)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args.spool}: {exc}", file=sys.stderr)
        return 2
    if left:
        print(f"delivered {delivered} operations; {left} left: run this again when the store is reachable")
        return 1
    print(f"delivered {delivered} operations from {args.spool}; the record is complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
