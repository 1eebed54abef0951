"""Preemption: SIGTERM ends a sweep the way Ctrl+C does, resumable; ``resume=auto`` finds it.

SLURM and Kubernetes preempt with SIGTERM, a grace period, then SIGKILL. :func:`install` makes
SIGTERM a Ctrl+C (SIGINT to this process): Ray Tune stops starting trials, stops the running
ones and saves its experiment state one last time; the sweep then ends its MLflow runs
(KILLED, ``final_status`` INTERRUPTED), flushes the record and the driver exits with
:data:`EXIT_PREEMPTED`. ``ray.init`` installs its own SIGTERM handler (it exits at once), so
the sweep calls :func:`install` again once Ray is up.

A running driver holds an exclusive lock on ``<sweep dir>/.driver.lock``
(:class:`DriverLock`); :func:`latest_unfinished` gives the newest sweep of a name under a
storage directory that is neither finished (its record says so) nor held by a driver: what a
requeued job resumes with ``resume=auto``.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import signal
import threading
from typing import Any

#: The driver's exit status after SIGTERM: the sweep is saved and can be resumed (EX_TEMPFAIL).
EXIT_PREEMPTED = 75
LOCK_FILE = ".driver.lock"

_PREEMPTED = threading.Event()


def install() -> None:
    """Make SIGTERM end the sweep as Ctrl+C does (in the main thread only; idempotent)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(_signum: int, _frame: Any) -> None:
    first = not _PREEMPTED.is_set()
    _PREEMPTED.set()
    if first:
        os.kill(os.getpid(), signal.SIGINT)  # Tune's handler: stop, save state; else KeyboardInterrupt


def preempted() -> bool:
    """Whether this process received SIGTERM."""
    return _PREEMPTED.is_set()


class DriverLock:
    """An exclusive ``flock`` on ``<directory>/.driver.lock`` while a driver runs the sweep
    (local directories only; released when the process ends, whatever ends it)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another driver holds it (or the directory is remote)."""
        if "://" in self.directory or not os.path.isdir(self.directory):
            return False
        fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def latest_unfinished(storage: str, name: str, record_file: str) -> str | None:
    """The newest ``<storage>/<name>_*`` sweep directory whose record (``record_file``) is not
    marked finished and that no running driver holds; None when there is none.

    Newest by the record's modification time (the names carry the start time too).
    """
    candidates = []
    for directory in glob.glob(os.path.join(glob.escape(storage), f"{glob.escape(name)}_*")):
        path = os.path.join(directory, record_file)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("finished"):
            continue
        lock = DriverLock(directory)
        if not lock.acquire():
            continue
        lock.release()
        candidates.append((os.path.getmtime(path), directory))
    return max(candidates)[1] if candidates else None
