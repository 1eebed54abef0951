"""Opening the store in the background: a tracker made while the caller starts Ray.

Opening a new SQLite store runs its schema migrations (~2 s); a sweep started on this machine
overlaps that with Ray's start-up instead of waiting for it first.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from orchestrator.tracking.tracker import SweepTracker


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
        """The tracker, once made (waits for it); raises what its constructor raised."""
        return self._future.result()

    def discard(self) -> None:
        """Stop the tracker that will not be used (a failed opening has nothing to stop)."""
        if self._future.exception() is None:
            self._future.result().end_sweep("FAILED")  # no run was made: this stops its writer
