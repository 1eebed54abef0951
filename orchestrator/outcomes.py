"""How each trial ended, decided once when it ends; the MLflow record and the summary read it here."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from analysis.records import final_status

#: The status of a trial that never ended on its own (Ray stopped it on Ctrl+C, or the driver died).
INTERRUPTED = "INTERRUPTED"


class Outcomes(Callback):
    """Records each trial's final status (:func:`analysis.records.final_status`) when it ends.

    A trial ends on its own when Ray calls its completion or error hook. Ray marks the trials it
    stops on Ctrl+C TERMINATED too but calls neither hook, so a trial missing here after ``fit``
    returned was interrupted (:meth:`of` says INTERRUPTED). With the convergence scheduler the
    status follows its decision (stop: CONVERGED, prune: PRUNED) and a trial whose result broke
    the metric contract is an ERROR. Put it before the callbacks that read it.
    """

    def __init__(self, budget: int, scheduler: Any = None) -> None:
        self.budget = budget
        self.scheduler = scheduler  # a ConvergenceScheduler, or None
        self.status: dict[str, str] = {}

    def of(self, trial_id: str) -> str:
        """The final status of ``trial_id``: INTERRUPTED while it has not ended on its own."""
        return self.status.get(trial_id, INTERRUPTED)

    def decide(self, trial: Any, errored: bool) -> str:
        """Decide and keep the final status of ``trial`` (once: a later call returns the first)."""
        tid = trial.trial_id
        if tid not in self.status:
            s = self.scheduler
            decision = s.decision(tid) if s is not None else None
            broken = s is not None and s.problem(tid) is not None
            self.status[tid] = final_status(
                trial.last_result or {},
                trial.config.get("epochs", self.budget),
                errored=errored or broken,
                action=decision.action if decision is not None else None,
            )
        return self.status[tid]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.decide(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.decide(trial, errored=True)
