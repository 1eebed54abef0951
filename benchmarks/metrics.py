"""Figures of one replayed search (``Recorder`` -> ``RepeatStats``) and their summary over repeats.

Definitions (the README of ``benchmarks/`` repeats them):

- ``epochs``: epochs trained, every attempt counted; ``sim_time``: the makespan, the simulated time
  of the last completed (or cancelled) epoch.
- ``best_final_acc``: the best ``val_acc`` reported at the final budgeted epoch by any attempt that
  reached it; a stopped trial's last value is not a final. ``nan`` when no attempt reached it.
- ``time_to_target`` / ``epochs_to_target``: the simulated time and the epochs completed (this one
  included) when some trial first REPORTS ``val_acc >= bank.target - TARGET_TOLERANCE``;
  ``bank.target`` is the best final ``val_acc`` over all configurations' seed-0 runs. Epochs still
  in progress on other workers at that moment are not counted.
- ``restarts``: attempts started after the first one. A restart *helped* when the last ``val_acc``
  the new attempt reported (when it ended: completed, stopped, restarted again, or the search
  ended) is strictly higher than the last ``val_acc`` the previous attempt reported (the value at
  the restart point); a new attempt that never reported did not help.
- ``best_config_pruned``: the bank's best configuration was proposed and its trial ended without
  any attempt reaching its full budget.
- ``restart_epochs``: epochs trained in restarted attempts (attempt >= 1), every one counted.
- ``best_trace``: ``(time, value)`` each time the best ``val_acc`` reported so far rises: the
  best-so-far curve that ``benchmarks/regret.py`` reads (the same reports as the time to target).
- ``rescue_eligible`` / ``rescued``: the proposed configurations whose seed-0 final (the curve
  attempt 0 replays) is more than ``RESCUE_GAP`` below their best seed's final (finals: the last
  value of the padded curve, i.e. the last finite ``val_acc`` over the full budget), and of those,
  the ones whose final attempt's last reported ``val_acc`` (even if stopped early) is at least
  that best seed's final minus ``RESCUE_TOLERANCE``. A bank with one seed per configuration has
  none eligible.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from benchmarks.bank import Bank

TARGET_TOLERANCE = 0.005  # 0.5 accuracy points
BASELINE = "asha"  # the scheduler others are compared with (ratios, regret horizon, gap closed)
RESCUE_GAP = 0.1  # a seed-0 final this far below the best seed's final needs rescuing
RESCUE_TOLERANCE = 0.02  # a final attempt ending this close to the best seed's final rescued it
_FLOAT_SLACK = 1e-9


@dataclass
class _TrialLog:
    config_index: int
    attempt_last: list[float | None] = field(default_factory=lambda: [None])
    reached_budget: bool = False

    @property
    def attempt(self) -> int:
        return len(self.attempt_last) - 1


@dataclass(frozen=True)
class RepeatStats:
    """The figures of one replayed search (see the module docstring for definitions)."""

    epochs: int
    sim_time: float
    best_final_acc: float
    time_to_target: float | None
    epochs_to_target: int | None
    restarts: int
    restarts_helped: int
    best_config_proposed: bool
    best_config_pruned: bool
    stranded: int
    restart_epochs: int
    rescue_eligible: int
    rescued: int
    best_trace: tuple[tuple[float, float], ...]


def rescue_bars(bank: Bank) -> dict[int, float]:
    """Return ``{config index: best seed's final - RESCUE_TOLERANCE}`` for the configurations to rescue.

    A configuration needs rescuing when its seed-0 final is more than ``RESCUE_GAP`` below the
    best final over its seeds; with one seed it never does.
    """
    bars = {}
    for index, curves in enumerate(bank.configs):
        best = max(run.final_acc for run in curves.runs)
        if curves.runs[0].final_acc < best - RESCUE_GAP:
            bars[index] = best - RESCUE_TOLERANCE - _FLOAT_SLACK
    return bars


class Recorder:
    """Accumulate one repeat's figures from the events a simulator reports, in time order."""

    def __init__(self, bank: Bank) -> None:
        self._threshold = bank.target - TARGET_TOLERANCE - _FLOAT_SLACK
        self._best_index = bank.best_index
        self._trials: dict[str, _TrialLog] = {}
        self._rescue_bars = rescue_bars(bank)
        self._best_seen = -math.inf
        self._trace: list[tuple[float, float]] = []
        self.epochs = 0
        self.restart_epochs = 0
        self.now = 0.0
        self.best_final = -math.inf
        self.time_to_target: float | None = None
        self.epochs_to_target: int | None = None
        self.stranded = 0

    def proposed(self, key: str, config_index: int) -> None:
        """Record that trial ``key`` replays configuration ``config_index``."""
        self._trials[key] = _TrialLog(config_index)

    def restarted(self, key: str) -> None:
        """Record that trial ``key`` starts a new attempt from epoch 1."""
        self._trials[key].attempt_last.append(None)

    def epoch(self, now: float, key: str, epoch: int, budget: int, val_acc: float) -> None:
        """Record a completed epoch of trial ``key`` at simulated time ``now``."""
        self.now = max(self.now, now)
        self.epochs += 1
        log = self._trials[key]
        log.attempt_last[-1] = val_acc
        self.restart_epochs += log.attempt >= 1
        if val_acc > self._best_seen:
            self._best_seen = val_acc
            self._trace.append((now, val_acc))
        if self.time_to_target is None and val_acc >= self._threshold:
            self.time_to_target, self.epochs_to_target = now, self.epochs
        if epoch >= budget:
            log.reached_budget = True
            self.best_final = max(self.best_final, val_acc)

    def cancelled(self, now: float) -> None:
        """Record that a worker was busy until ``now`` on an epoch that was cancelled."""
        self.now = max(self.now, now)

    def _rescued(self, log: _TrialLog) -> bool:
        """Return whether the last value of the trial's final attempt clears its rescue bar."""
        last = log.attempt_last[-1]
        return last is not None and last >= self._rescue_bars[log.config_index]

    def finish(self) -> RepeatStats:
        """Return the repeat's figures."""
        restarts = helped = 0
        for log in self._trials.values():
            for before, after in itertools.pairwise(log.attempt_last):
                restarts += 1
                helped += after is not None and before is not None and after > before
        best = [log for log in self._trials.values() if log.config_index == self._best_index]
        eligible = [log for log in self._trials.values() if log.config_index in self._rescue_bars]
        rescued = [log for log in eligible if self._rescued(log)]
        return RepeatStats(
            epochs=self.epochs,
            sim_time=self.now,
            best_final_acc=self.best_final if self.best_final > -math.inf else math.nan,
            time_to_target=self.time_to_target,
            epochs_to_target=self.epochs_to_target,
            restarts=restarts,
            restarts_helped=helped,
            best_config_proposed=bool(best),
            best_config_pruned=any(not log.reached_budget for log in best),
            stranded=self.stranded,
            restart_epochs=self.restart_epochs,
            rescue_eligible=len(eligible),
            rescued=len(rescued),
            best_trace=tuple(self._trace),
        )


def _median_or_none(values: list[float | None]) -> float | None:
    """Return the median with ``None`` (never reached) counted as +inf; ``None`` if that median is inf."""
    if not values:
        return None
    median = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(median) else median


def _mean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def summarize(stats: list[RepeatStats]) -> dict[str, float | None]:
    """Summarize repeats: means, except medians for the compute to target; ``None`` where undefined.

    ``restarts_helped``, ``restart_epochs_frac`` and ``rescued_frac`` pool all repeats (helped
    restarts / restarts, restart epochs / epochs, rescued / eligible), ``None`` with a zero
    denominator; ``reached_target`` counts the repeats that reached the target.
    """
    restarts = sum(s.restarts for s in stats)
    epochs = sum(s.epochs for s in stats)
    eligible = sum(s.rescue_eligible for s in stats)
    return {
        "epochs": float(np.mean([s.epochs for s in stats])),
        "sim_time": float(np.mean([s.sim_time for s in stats])),
        "best_final_acc": _mean_or_none([s.best_final_acc for s in stats]),
        "compute_to_target": _median_or_none([s.time_to_target for s in stats]),
        "epochs_to_target": _median_or_none([s.epochs_to_target for s in stats]),
        "target_reached_frac": float(np.mean([s.time_to_target is not None for s in stats])),
        "reached_target": sum(s.time_to_target is not None for s in stats),
        "restarts": float(np.mean([s.restarts for s in stats])),
        "restarts_helped": sum(s.restarts_helped for s in stats) / restarts if restarts else None,
        "restart_epochs_frac": sum(s.restart_epochs for s in stats) / epochs if epochs else None,
        "rescued_frac": sum(s.rescued for s in stats) / eligible if eligible else None,
        "best_config_pruned_frac": float(np.mean([s.best_config_pruned for s in stats])),
        "best_config_proposed_frac": float(np.mean([s.best_config_proposed for s in stats])),
        "stranded": float(np.mean([s.stranded for s in stats])),
        "repeats": len(stats),
    }
