"""The driver's side of the MLflow record: a parent run per sweep, a child run per trial, a run per restart.

Every call only enqueues (see :mod:`.writer`) and returns at once, with the run's id when the
store already has it and its handle otherwise (:mod:`.runs`). :attr:`SweepTracker.run_ids` and
:attr:`SweepTracker.parent_run_id` return the real id once known (waiting briefly while the
store is reachable). No run is left RUNNING: :meth:`SweepTracker.close` and the exit hook end
whatever is still open.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from typing import Any

from orchestrator.redact import redact
from orchestrator.tracking.client import _client, open_experiment
from orchestrator.tracking.deliver import _Deliverer
from orchestrator.tracking.ops import _Op, end_ops, param_batches
from orchestrator.tracking.reopen import reopen_sweep
from orchestrator.tracking.runs import _new_handle, _OpenRun, _RunIds, _TrialRuns, unrepeated
from orchestrator.tracking.spool import _default_spool_dir, _spool_name
from orchestrator.tracking.uri import delivery_lanes
from orchestrator.tracking.writer import _Writer

logger = logging.getLogger(__name__)

#: Seconds a flush at the end waits for an unreachable store before spooling (default 10).
GRACE_ENV = "ORCHESTRATOR_MLFLOW_GRACE_S"
#: The tag MLflow shows as a run's description (Markdown).
NOTE_TAG = "mlflow.note.content"


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
        lanes: int | None = None,
    ) -> None:
        self.uri = uri
        self.client = _client(uri, timeout_s)
        self.experiment_id = open_experiment(self.client, uri, experiment)
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
        self._lanes = delivery_lanes(uri) if lanes is None else lanes  # runs written at once
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
            self._live_writer = _Writer(deliverer, self.uri, self.spool_path, self._interval_s, self._lanes)
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
        """Unpickle a copy (see :meth:`__getstate__`); it spools, if it must, to a file of its own."""
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

    # -- ids
    def _new_run(self, name: str, tags: dict[str, str], parent: str | None) -> str:
        """Queue the creation of a run (under ``parent``, a handle); return its new handle."""
        handle = _new_handle()
        data = {"name": name, "tags": {k: str(v) for k, v in tags.items()}, "parent": parent}
        self._writer.put(_Op("create", handle, {**data, "start": int(time.time() * 1000)}))
        return handle

    def _resolve(self, handle: str, wait_s: float = 10.0) -> str:
        """The store's id of ``handle``; waits up to ``wait_s`` for it while the store is reachable."""
        if handle in self._resolved:
            return self._resolved[handle]
        return self._writer.wait_for_run_id(handle, wait_s)

    @property
    def parent_run_id(self) -> str | None:
        """The sweep run's id (its handle while the store does not have it); None when none is open."""
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
        runs (and their restarts' runs) instead of creating new ones (see :mod:`.reopen`).

        Returns each trial's (latest attempt, last step logged there), so nothing is logged twice.
        """
        return reopen_sweep(self, parent_run_id)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Every params dict logged goes through here (``run_id`` is the run's handle)."""
        for op in param_batches(run_id, redact(params)):  # secrets masked
            self._writer.put(op)

    def _artifact(self, run_id: str, path: str, data: bytes) -> None:
        """Queue ``data`` as the artifact ``path`` of the run ``run_id`` (a handle)."""
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

    @_timed
    def tag_trial_run(self, trial_id: str, tags: dict[str, str]) -> None:
        """Tags on a trial's own run, open or ended (e.g. ``pareto`` once the sweep is over)."""
        handle = self.run_ids._handles.get(trial_id)
        if handle is not None:
            self._writer.put(_Op("batch", handle, {"tags": {k: str(v) for k, v in tags.items()}}))

    def log_metrics(self, trial_id: str, metrics: dict[str, float], step: int, attempt: int = 0) -> None:
        """Queue one step of an attempt's metrics; non-finite values are kept as they are, an
        attempt's constants (``attempt``, ``seed``, ``params``) only when they change
        (:func:`~orchestrator.tracking.runs.unrepeated`)."""
        started = time.perf_counter()
        run = self.trials[trial_id].current(attempt)
        values = unrepeated(metrics, run.sent)
        self._writer.put(_Op("m", run.run_id, (int(step), int(time.time() * 1000), values)))
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
        """Queue the end of a run: its final (finite) metrics, its tags, then its status."""
        for op in end_ops(run_id, status, tags, metrics, int(time.time() * 1000)):
            self._writer.put(op)

    def end_sweep(
        self,
        status: str,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        description: str | None = None,
    ) -> None:
        """End open trial runs (KILLED unless already ended), then the parent run; wait until
        everything is delivered or spooled. Adds ``mlflow_driver_ms_per_result`` to the metrics;
        ``description`` (Markdown) becomes the parent run's description (:data:`NOTE_TAG`)."""
        self._end_open_trials("KILLED")
        if self.parent is not None:
            cost = {
                "mlflow_driver_ms_per_result": self.ms_per_result(),
                "mlflow_results_logged": self.results_logged,
            }
            if description is not None:
                tags = {**(tags or {}), NOTE_TAG: description}
            self._finish(self.parent.run_id, status, tags, {**(metrics or {}), **cost})
            self.parent = None
        self.flush()
        self._writer.stop()

    def close(self, status: str) -> None:
        """End every trial run still open with ``status`` (never leaves a run RUNNING), then flush."""
        self._end_open_trials(status)
        self.flush()

    def _end_open_trials(self, status: str) -> None:
        """End every trial run still open with ``status``, tagged ``final_status=INTERRUPTED``."""
        for trial_id in list(self.trials):
            self.end_trial(trial_id, status, {"final_status": "INTERRUPTED"})

    def ms_per_result(self) -> float:
        """Driver milliseconds spent in tracking calls per logged result so far."""
        return 1000.0 * self.driver_seconds / max(1, self.results_logged)

    @property
    def requests(self) -> int:
        """Operations delivered to the store so far (one request each: a log_batch, a run's
        creation or end, an artifact)."""
        return self._live_writer.delivered if self._live_writer is not None else 0

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is delivered (True) or, when the store stays unreachable
        for ``outage_grace_s`` or ``timeout`` passes, written to the spool file (False)."""
        writer = self._writer
        if not writer.thread.is_alive():  # stopped (or died): nothing left to wait for
            return writer.pending() == 0 or writer.spool() == 0
        if writer.drain(self.outage_grace_s, timeout):
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
