"""Ray Tune callback that records every trial in MLflow through :class:`SweepTracker`.

Runs in the driver, so trial workers never need access to the tracking store. Each trial
gets a child run when it starts; each result is logged with ``step = epoch``; a result that
repeats an epoch already logged for the same attempt (a trial resumed from an older
checkpoint after a crash replays it) is not logged twice.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from orchestrator.config import METRIC_KEYS, check_result
from orchestrator.tracking import SweepTracker

logger = logging.getLogger(__name__)

#: Metrics logged per epoch: the contract, minus the step itself, plus the epoch's wall time.
LOGGED_KEYS = tuple(k for k in METRIC_KEYS if k != "epoch") + ("time_this_iter_s",)


#: Trial config keys that are bookkeeping, not hyperparameters.
NOT_PARAMS = ("run", "attempt", "trial_index")


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's hyperparameters: its config without the bookkeeping keys."""
    return {k: v for k, v in config.items() if k not in NOT_PARAMS}


def final_status(last_result: dict[str, Any], budget: int, *, errored: bool) -> str:
    """ERROR when the trial raised, COMPLETED when it trained its whole budget, else STOPPED_EARLY."""
    if errored:
        return "ERROR"
    return "COMPLETED" if int(last_result.get("epoch", 0)) >= int(budget) else "STOPPED_EARLY"


def trial_name(trial: Any) -> str:
    """``trial_0007_<ray id>``: the searcher's index first, so names sort in sweep order."""
    index = trial.config.get("trial_index")
    if isinstance(index, int):
        return f"trial_{index:04d}_{trial.trial_id}"
    return f"trial_{trial.trial_id}"


class MlflowTrialCallback(Callback):
    """Opens a child run per trial, logs per-epoch metrics, ends the run with its final status."""

    def __init__(self, tracker: SweepTracker, budget: int) -> None:
        self.tracker = tracker
        self.budget = budget
        self._logged: dict[str, tuple[int, int]] = {}  # trial id -> (attempt, last epoch)

    def _ensure_run(self, trial: Any) -> None:
        self.tracker.start_trial(
            trial.trial_id,
            trial_name(trial),
            trial_params(trial.config),
            tags={"ray_trial_dir": trial.storage.trial_fs_path if trial.storage else ""},
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        check_result(result)
        self._ensure_run(trial)
        attempt, epoch = int(result["attempt"]), int(result["epoch"])
        last = self._logged.get(trial.trial_id)
        if last is not None and last[0] == attempt and epoch <= last[1]:
            logger.debug("trial %s: epoch %d of attempt %d already logged", trial, epoch, attempt)
            return
        self._logged[trial.trial_id] = (attempt, epoch)
        metrics = {k: result[k] for k in LOGGED_KEYS if k in result}
        self.tracker.log_metrics(trial.trial_id, metrics, step=epoch)

    def _final_tags(self, trial: Any, status: str) -> dict[str, str]:
        last = trial.last_result or {}
        budget = trial.config.get("epochs", self.budget)
        final = final_status(last, budget, errored=status == "FAILED")
        return {"final_status": final, "epochs_run": str(int(last.get("epoch", 0)))}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)
        self.tracker.end_trial(trial.trial_id, "FINISHED", self._final_tags(trial, "FINISHED"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)
        tags = self._final_tags(trial, "FAILED")
        error = getattr(trial, "error_file", None)
        if error:
            tags["error_file"] = str(error)
        self.tracker.end_trial(trial.trial_id, "FAILED", tags)
