"""The numbers a report reads off each trial of a sweep: final value, convergence epoch, decay rate.

The convergence epoch is :func:`analysis.convergence.convergence_epoch` on the last attempt's
metric curve with the sweep's thresholds, so an online verdict can be reproduced offline; the
decay rate (:func:`decay_rate`) is read off the training loss up to that epoch. Pure: numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from analysis.convergence import DEFAULT_THRESHOLDS, Thresholds, convergence_epoch
from analysis.records import SweepRecord, TrialRecord


def decay_rate(loss: Sequence[float], until: int | None = None) -> float | None:
    """The loss's exponential decay rate per epoch: minus the slope of the least-squares line
    through ``ln(loss)`` against the epoch, over epochs 1..``until`` (default all).

    Only finite, positive losses count; fewer than 3 of them give None. ``2 * exp(-0.3 * t)``
    has rate 0.3; a flat loss 0; a rising one a negative rate.
    """
    ys = np.asarray(list(loss)[: until if until is not None else None], dtype=float)
    ts = np.arange(1, len(ys) + 1, dtype=float)
    ok = np.isfinite(ys) & (ys > 0)
    if ok.sum() < 3:
        return None
    slope = np.polyfit(ts[ok], np.log(ys[ok]), 1)[0]
    return float(-slope)


def thresholds_of(sweep: SweepRecord) -> Thresholds:
    """The sweep's thresholds (its overrides over the defaults; unknown names are ignored)."""
    names = {f.name for f in fields(Thresholds)}
    given = {k: v for k, v in sweep.thresholds.items() if k in names}
    try:
        return Thresholds(**given) if given else DEFAULT_THRESHOLDS
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLDS


@dataclass(frozen=True)
class TrialStats:
    """The numbers a report reads off one trial."""

    trial: TrialRecord
    value: float | None
    convergence_epoch: int | None
    decay_rate: float | None
    epoch_s: float | None
    restarts: int
    helped: bool | None  # None: not restarted, or no comparable values

    @property
    def converged(self) -> bool:
        """The last attempt ends on a plateau and the trial did not end stuck or diverged (a curve
        flat at chance level has a plateau too, but it stalled rather than converged)."""
        return self.convergence_epoch is not None and self.trial.verdict not in ("stuck", "diverged")

    @property
    def saved(self) -> int:
        """Epochs saved against running the trial once to its budget (negative: restarts cost more)."""
        return self.trial.budget - self.trial.epochs_run


def trial_stats(sweep: SweepRecord) -> list[TrialStats]:
    """Per-trial numbers, in sweep order."""
    th = thresholds_of(sweep)
    out = []
    for t in sweep.trials:
        last = t.attempts[-1]
        curve = last.series.get(sweep.metric) or []
        conv = convergence_epoch(curve, thresholds=th, mode=sweep.mode) if curve else None
        rate = decay_rate(last.series.get("train_loss") or [], conv)
        times = [v for v in last.series.get("time_this_iter_s") or [] if math.isfinite(v)]
        helped = None
        if t.restarts:
            first = t.best_of_attempt(0, sweep.metric, sweep.sign)
            final = t.final(sweep.metric)
            if first is not None and final is not None:
                helped = (final - first) * sweep.sign > 0
        out.append(
            TrialStats(
                trial=t,
                value=t.final(sweep.metric),
                convergence_epoch=conv,
                decay_rate=rate,
                epoch_s=float(np.median(times)) if times else None,
                restarts=t.restarts,
                helped=helped,
            )
        )
    return out
