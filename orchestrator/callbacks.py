"""Ray Tune callback that records every trial in MLflow through :class:`SweepTracker`.

Runs in the driver (over ``ray://``, in the task on the head that runs the Tuner), so trial
workers never need access to the tracking store. Each trial gets a child run when it starts;
each result is logged with ``step = epoch``; a result that repeats an epoch already logged for
the same attempt (a trial resumed from an older checkpoint after a crash replays it) is not
logged twice. :class:`JsonLogger` and :class:`CsvLogger` are Ray's ``result.json`` and
``progress.csv`` loggers that keep the driver's copy when a paused trial resumes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Any

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from orchestrator.contract import hyperparameters, logged_metrics, step_of, warm_source
from orchestrator.outcomes import Outcomes
from orchestrator.pausing import pause_tags
from orchestrator.policy import decision_text
from orchestrator.tracking import SweepTracker

logger = logging.getLogger(__name__)


def name_of(trial_id: str, config: dict[str, Any]) -> str:
    """``trial_0007_<ray id>``: the searcher's index first, so names sort in sweep order."""
    index = config.get("trial_index")
    return f"trial_{index:04d}_{trial_id}" if isinstance(index, int) else f"trial_{trial_id}"


def trial_name(trial: Any) -> str:
    """The name of a Ray trial (see :func:`name_of`); Ray's ``trial_name_creator``."""
    return name_of(trial.trial_id, trial.config)


class _KeepLocalLog:
    """Ray's logger callbacks copy a trial's file back from storage whenever the trial starts,
    a paused one resuming included; storage gets the driver's copy only at experiment snapshots,
    so that copy lost the rows reported since (a resumed trial's ``result.json`` then skips the
    epochs before its pause). Here the driver's own copy, once written, is kept; a resumed
    sweep (a new driver) still starts from the copy in storage."""

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if not os.path.exists(os.path.join(trial.local_path, file_name)):
            super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


class JsonLogger(_KeepLocalLog, JsonLoggerCallback):
    """Ray's ``result.json`` logger, keeping the driver's copy (:class:`_KeepLocalLog`)."""


class CsvLogger(_KeepLocalLog, CSVLoggerCallback):
    """Ray's ``progress.csv`` logger, keeping the driver's copy (:class:`_KeepLocalLog`)."""


class VerdictCallback(Callback):
    """Writes the convergence scheduler's verdict and decision into each result.

    ``verdict`` and ``verdict_reason`` are the curve's diagnosis; ``action`` and
    ``decision_reason`` what the policy did, and ``decision`` that in a few words
    (:func:`orchestrator.policy.decision_text`: ``pruned: rank rule at epoch 3``), the progress
    table's column. Ray lets callbacks change a result in place before it becomes the trial's
    last result, so the progress table and the result logs show them. Put it before the logger
    callbacks.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        decision = self.scheduler.decision(trial.trial_id)
        attempt = result.get("attempt", 0)
        if decision is not None and decision.verdict is not None and decision.attempt >= attempt:
            result["verdict"] = decision.verdict.status
            result["verdict_reason"] = decision.verdict.reason
            result["action"] = decision.action
            result["decision_reason"] = decision.reason
            budget = trial.config.get("epochs")  # the epochs of an attempt
            done = budget is not None and step_of(result) >= int(budget)
            result["decision"] = decision_text(decision, budget_done=done)


def init_tags(config: dict[str, Any]) -> dict[str, str]:
    """``init_from``: the warm start's source of a trial (its run settings), when it has one
    (a cold trial of a study that runs both has none)."""
    spec = warm_source(config)
    return {"init_from": str(spec["source"])} if spec else {}


class MlflowTrialCallback(Callback):
    """Opens a child run per trial (a nested run per restart), logs per-epoch metrics, and ends
    each run with its final status, verdict and lineage.

    With a :class:`ConvergenceScheduler` each trial's tags also hold its verdict, the reason
    and evidence, its convergence epoch and the lineage of its attempts. The learning-curve
    plots are drawn by the sweep's report (``python -m analysis``), outside the driver.
    """

    def __init__(
        self, tracker: SweepTracker, outcomes: Outcomes, scheduler: Any = None, metric: str | None = None
    ) -> None:
        self.tracker = tracker
        self.outcomes = outcomes  # decides each trial's final status; runs before this callback
        self.scheduler = scheduler
        self.metric = metric  # the objective: its last value goes on the trial's run as final_<metric>
        self._logged: dict[str, tuple[int, int]] = {}  # trial id -> (attempt, last epoch)

    def logged_up_to(self, trial_id: str) -> tuple[int, int] | None:
        """The (attempt, epoch) of the last step of ``trial_id`` in MLflow, None before any."""
        return self._logged.get(trial_id)

    def mark_logged(self, steps: dict[str, tuple[int, int]]) -> None:
        """Take steps already in MLflow (trial id -> last (attempt, epoch)): those and earlier
        ones of the same attempt are not logged again when Ray replays them."""
        self._logged.update(steps)

    def _ensure_run(self, trial: Any) -> None:
        self.tracker.start_trial(
            trial.trial_id,
            trial_name(trial),
            hyperparameters(trial.config),
            tags={"ray_trial_dir": trial.path or "", **init_tags(trial.config)},
        )

    def _decision(self, trial_id: str) -> Any:
        return self.scheduler.decision(trial_id) if self.scheduler is not None else None

    def _pause_tags(self, trial_id: str) -> dict[str, str]:
        """The trial's pause tags (:func:`orchestrator.pausing.pause_tags`), none without pauses."""
        policy = getattr(self.scheduler, "policy", None)
        return pause_tags(policy, trial_id) if hasattr(policy, "pause_record") else {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)
        tags = self._pause_tags(trial.trial_id)
        if "resumed_at_epoch" in tags:  # it resumes: where it paused, why it resumed
            tags["outcome"] = f"resumed at epoch {tags['resumed_at_epoch']}"
            self.tracker.set_tags(trial.trial_id, tags, attempt=int(trial.config.get("attempt", 0)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._ensure_run(trial)
        tid = trial.trial_id
        if self.scheduler is not None and self.scheduler.problem(tid) is not None:
            return  # the result broke the metric contract: the run's `error` tag says how
        attempt, epoch = int(result.get("attempt", 0)), step_of(result)
        decision = self._decision(tid)
        last = self._logged.get(tid)
        if last is not None and last[0] == attempt and epoch <= last[1]:
            logger.debug("trial %s: epoch %d of attempt %d already logged", trial, epoch, attempt)
            return
        if last is not None and attempt < last[0]:
            return  # a late result of an attempt that was restarted
        if attempt > 0 and (last is None or attempt > last[0]):
            self._start_attempt(trial, attempt, result.get("seed"))
        self._logged[tid] = (attempt, epoch)
        metrics = logged_metrics(result)
        self.tracker.log_metrics(tid, metrics, step=epoch, attempt=attempt)
        if decision is not None and decision.action == "pause":
            self.tracker.set_tags(tid, {"outcome": "paused", **self._pause_tags(tid)}, attempt=attempt)
        if decision is not None and decision.action == "restart":
            self.tracker.set_tags(
                tid, {"outcome": f"restarted: {decision.reason}", "epochs_run": str(epoch)}, attempt=attempt
            )

    def _start_attempt(self, trial: Any, attempt: int, seed: Any) -> None:
        reason = ""
        if self.scheduler is not None:
            lineage = self.scheduler.lineage(trial.trial_id)
            reason = lineage[attempt].reason if attempt < len(lineage) else ""
        self.tracker.start_attempt(
            trial.trial_id,
            attempt,
            f"{trial_name(trial)} attempt {attempt}",
            {"seed": str(seed), "restart_reason": reason},
        )

    def _final_tags(self, trial: Any, errored: bool) -> dict[str, str]:
        last = trial.last_result or {}
        decision = self._decision(trial.trial_id)
        tags = {
            "final_status": self.outcomes.decide(trial, errored),
            "epochs_run": str(int(last.get("epoch", 0))),
            "attempts": str(int(last.get("attempt", 0)) + 1),
        }
        if decision is not None:  # a paused trial stopped without resuming has no verdict of its own
            tags["decision_reason"] = decision.reason
        if decision is not None and decision.verdict is not None:
            verdict = decision.verdict
            tags["verdict"] = verdict.status
            tags["verdict_reason"] = verdict.reason
            tags["verdict_evidence"] = json.dumps(dict(verdict.evidence), default=str)
            if verdict.status in ("converged", "plateau_bad") and verdict.step is not None:
                tags["convergence_epoch"] = str(verdict.step)
        if self.scheduler is not None and (problem := self.scheduler.problem(trial.trial_id)) is not None:
            tags["error"] = problem
        if self.scheduler is not None:
            lineage = self.scheduler.lineage(trial.trial_id)
            tags["lineage"] = json.dumps([asdict(r) for r in lineage], default=str)
        if pauses := self._pause_tags(trial.trial_id):
            policy = self.scheduler.policy
            history = [asdict(r) for r in policy.pause_record(trial.trial_id)]
            tags.update(pauses, pause_history=json.dumps(history, default=str))
        return tags

    def _final_metrics(self, trial: Any) -> dict[str, float] | None:
        """``final_<metric>``: the objective at the trial's last epoch, of its last attempt (the
        trial's own run holds the first attempt's curve, a restart's are nested runs)."""
        value = (trial.last_result or {}).get(self.metric) if self.metric else None
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return {f"final_{self.metric}": float(value)} if numeric else None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)
        tags = self._final_tags(trial, errored=False)
        self.tracker.end_trial(trial.trial_id, "FINISHED", tags, self._final_metrics(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)
        tags = self._final_tags(trial, errored=True)
        error = getattr(trial, "error_file", None)
        if error:
            tags["error_file"] = str(error)
        self.tracker.end_trial(trial.trial_id, "FAILED", tags)
