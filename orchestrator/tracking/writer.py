"""The background writer: delivers the driver's ops in order, retries while the store is down, spools.

The driver thread only appends to a deque; this thread groups what arrived (:func:`group_ops`)
and hands it to the deliverer, several runs' ops at once where the store takes concurrent writes
(:func:`~orchestrator.tracking.uri.delivery_lanes`). The first transient failure is warned about
once; the op keeps its place and is retried with backoff, so nothing on its run overtakes it. What is still
undelivered when the driver gives up waiting goes to the spool file (:mod:`.spool`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from orchestrator.tracking.client import _is_transient, _short
from orchestrator.tracking.deliver import _Deliverer
from orchestrator.tracking.ops import WAVE_SCAN, _Op, group_ops, next_wave
from orchestrator.tracking.spool import append_ops, write_header

logger = logging.getLogger(__name__)


class _Writer:
    """Delivers the driver's ops in the background, in order; spools what it cannot deliver.

    The driver only appends to a deque. Every ``interval_s`` (at once when woken: a flush, an
    ended trial) the writer groups what arrived and delivers it in waves of up to ``lanes`` ops
    on different runs at once (:func:`next_wave`: each run's ops in order, a parent before its
    children). On a transient failure it keeps the op in its place, warns once, and retries
    with backoff (0.5 s doubling to 5 s). Once :meth:`spool` has run, everything (queued then
    and later) goes to the spool file instead.
    """

    def __init__(
        self, deliverer: _Deliverer, uri: str, spool_path: str, interval_s: float, lanes: int = 1
    ) -> None:
        self.deliverer = deliverer
        self.lanes = lanes
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
        """Queue ``op`` (the driver's only cost: an append)."""
        self.inbox.append(op)

    def pending(self) -> int:
        """Ops queued and not yet delivered or spooled."""
        return len(self.inbox) + len(self.units)

    def idle(self) -> bool:
        """True when nothing is queued and no op is being delivered."""
        return not self.inbox and not self.units and not self.busy

    def drain(self, grace_s: float, timeout: float | None = None) -> bool:
        """Wait until everything queued is delivered (True); stop waiting (False) once the store has
        been unreachable for ``grace_s`` of this wait, ``timeout`` has passed or the queue was spooled."""
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        self.wake.set()
        with self.changed:
            while not self.idle() and not self.spooled:
                now = time.monotonic()
                down_for = now - max(started, self.outage_since or now) if self.outage_since else 0.0
                if (deadline is not None and now >= deadline) or down_for >= grace_s:
                    break
                self.changed.wait(0.2)
                self.wake.set()
        return self.idle() and not self.spooled

    def wait_for_run_id(self, handle: str, wait_s: float) -> str:
        """The store's id of the run ``handle``, once delivered; waits up to ``wait_s`` for it while the
        store is reachable, and returns ``handle`` itself when it is not known by then."""
        resolved = self.deliverer.resolved
        deadline = time.monotonic() + wait_s
        self.wake.set()
        with self.changed:
            while handle not in resolved and self.outage_since is None and not self.spooled:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 0.5))
        return resolved.get(handle, handle)

    # -- writer thread
    def _loop(self) -> None:
        """Run a pass every ``interval_s`` (at once when woken; with backoff while the store is down)."""
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
        """Move what the driver queued into the delivery queue, grouped and numbered."""
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
                failure = self._deliver_wave(next_wave(self.units, self.lanes))
                if failure is not None:
                    self._down(failure)
                    return False
        if self.outage_since is not None and not self.spooled:
            logger.warning(
                "MLflow at %s reachable again after %.0fs; queued operations delivered",
                self.uri,
                time.monotonic() - self.outage_since,
            )
            self.outage_since = None
        return True

    def _deliver_wave(self, wave: list[_Op]) -> BaseException | None:
        """Deliver ``wave`` (ops on different runs: each in its own thread when there are several),
        drop from the queue what was delivered or refused for good, and return the first transient
        failure (its op stays queued, marked uncertain), else None."""
        outcomes: list[BaseException | None] = [None] * len(wave)

        def attempt(i: int) -> None:
            outcomes[i] = self._try(wave[i])

        if len(wave) == 1:
            attempt(0)
        else:  # daemon threads: a request hanging at exit must not hold the interpreter
            threads = [threading.Thread(target=attempt, args=(i,), daemon=True) for i in range(len(wave))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        gone = {id(op) for op, exc in zip(wave, outcomes, strict=True) if exc is None}
        head = [self.units.popleft() for _ in range(min(len(self.units), WAVE_SCAN))]
        self.units.extendleft(reversed([op for op in head if id(op) not in gone]))
        self.delivered += len(gone)
        self.busy = bool(self.units)
        return next((exc for exc in outcomes if exc is not None), None)

    def _try(self, op: _Op) -> BaseException | None:
        """Deliver ``op``: None when done or refused for good (warned), the failure when transient."""
        try:
            self.deliverer.deliver(op)
        except Exception as exc:  # noqa: BLE001 - classified below
            if _is_transient(exc):
                op.uncertain = True
                return exc
            logger.warning("MLflow refused %s on run %s (%s); skipped", op.kind, op.run, _short(exc))
        return None

    def _down(self, exc: BaseException) -> None:
        """Note the store down: warn at the start of an outage, only debug-log while it lasts."""
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
                write_header(self.spool_path, self.uri, self.deliverer.experiment_id, self.deliverer.resolved)
                self.spooled = True
            return self._append_spool()

    def _append_spool(self) -> int:
        """Move the delivery queue to the spool file (the caller holds the lock); return how many ops."""
        n = len(self.units)
        if n:
            append_ops(self.spool_path, self.units)
            self.units.clear()
        self.busy = False
        return n
