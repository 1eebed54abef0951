"""The ``topk`` baseline as a Ray ``TrialScheduler``: one epoch for everyone, then the top k to the end."""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def default_k(n_trials: int) -> int:
    """Return how many configurations ``topk`` continues: ``max(1, n_trials // 8)``."""
    return max(1, n_trials // 8)


class TopKScheduler(FIFOScheduler):
    """Train every configuration one epoch (pausing each), then continue only the top ``k``.

    The decision waits until all ``n_trials`` trials have reported epoch 1 (a barrier); then the
    ``k`` best by the metric (ties: the earlier trial) resume from epoch 2 and run to their budget,
    the others are stopped. New trials always run before paused ones.

    Args:
        n_trials: How many trials the search will add (the barrier's size).
        k: How many continue; ``default_k(n_trials)`` when ``None``.
    """

    def __init__(self, n_trials: int, k: int | None = None) -> None:
        super().__init__()
        if n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials=}")
        self._n_trials = n_trials
        self._k = default_k(n_trials) if k is None else k
        if self._k < 1:
            raise ValueError(f"k must be >= 1, got k={self._k}")
        self._sign = 1.0
        self._first: dict[Trial, float] = {}
        self._keep: set[Trial] | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take the metric and its direction (``max`` unless ``mode == "min"``)."""
        if metric:
            self._metric = metric
        self._sign = -1.0 if mode == "min" else 1.0
        return True

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """Pause after epoch 1 until everyone has one; then keep the top k and stop the rest."""
        if self._keep is not None or result["training_iteration"] > 1:
            return (
                TrialScheduler.CONTINUE if self._keep is None or trial in self._keep else TrialScheduler.STOP
            )
        self._first[trial] = self._sign * result[self._metric]
        if len(self._first) < self._n_trials:
            return TrialScheduler.PAUSE
        ranked = sorted(self._first, key=self._first.__getitem__, reverse=True)
        self._keep = set(ranked[: self._k])
        for other in ranked[self._k :]:
            if other is not trial and other.status == Trial.PAUSED:
                tune_controller.stop_trial(other)
        return TrialScheduler.CONTINUE if trial in self._keep else TrialScheduler.STOP

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """Return a PENDING trial, else a PAUSED trial among the top k once they are known."""
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        if self._keep is None:
            return None
        return next((t for t in trials if t.status == Trial.PAUSED and t in self._keep), None)

    def debug_string(self) -> str:
        """Describe the rule."""
        return f"Using top-k: {self._k} of {self._n_trials} continue after epoch 1."
