"""The runs of a sweep as the driver knows them: client-side handles, open runs, a trial's runs.

Every run gets a handle (``pending-<hex>``) the moment it is asked for; the writer maps it to
the store's run id once the run exists. Open runs are kept by handle, so the driver never
waits for the store to go on logging.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.tracking.tracker import SweepTracker

_HANDLE_PREFIX = "pending-"
#: Metrics that hold one value through an attempt (the framework's ``attempt`` and ``seed``, the
#: built-ins' ``params``): sent once per run and again only when they change (:func:`unrepeated`).
ONCE_PER_RUN = ("attempt", "seed", "params")


def is_pending(run_id: str) -> bool:
    """True for a run's client-side handle: the store had not created the run (it was unreachable)."""
    return run_id.startswith(_HANDLE_PREFIX)


def _new_handle() -> str:
    """A new run's client-side handle: ``pending-`` and 32 random hex digits."""
    return _HANDLE_PREFIX + uuid.uuid4().hex


@dataclass
class _OpenRun:
    """A run this tracker opened and has not ended yet."""

    run_id: str  # the run's handle; SweepTracker resolves it to the store's id
    sent: dict[str, float] = field(default_factory=dict)  # the ONCE_PER_RUN values last sent


def unrepeated(metrics: Mapping[str, float], sent: dict[str, float]) -> dict[str, float]:
    """``metrics`` less each :data:`ONCE_PER_RUN` value equal to the one last sent on the run
    (``sent``, updated): an attempt's constants cost one value per run, not one per epoch."""
    out = {}
    for key, value in metrics.items():
        if key in ONCE_PER_RUN:
            if sent.get(key) == value:
                continue
            sent[key] = value
        out[key] = value
    return out


@dataclass
class _TrialRuns:
    """A trial's run (attempt 0 logs there) and the nested runs of its restarts."""

    main: _OpenRun
    attempts: dict[int, _OpenRun] = field(default_factory=dict)

    def current(self, attempt: int) -> _OpenRun:
        """The run an attempt logs to: its nested run for a restart, else the trial's own run."""
        return self.attempts.get(attempt, self.main) if attempt > 0 else self.main


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
