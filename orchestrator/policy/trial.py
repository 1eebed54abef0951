"""What the policy keeps of one trial: its attempts (lineage) and the current attempt's recent curves.

Memory per trial is bounded: the last ``history`` epochs of each series plus a summary.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from analysis.convergence import Thresholds


@dataclass
class AttemptRecord:
    """One attempt of a trial: its seed, why it started, how many epochs it trained, where it ended."""

    attempt: int
    seed: int | None
    reason: str
    epochs: int = 0
    final: float | None = None
    outcome: str | None = None
    kind: str | None = None  # the kind of failure that started this attempt (None: the first)


class _Trial:
    """Bounded per-trial state: the current attempt's recent series plus a summary."""

    def __init__(self, history: int) -> None:
        self.loss: deque[float] = deque(maxlen=history)
        self.metric: deque[float] = deque(maxlen=history)
        self.grad: deque[float] = deque(maxlen=history)
        self.dead: deque[float] = deque(maxlen=history)
        self.epoch = 0
        self.cost = 0.0  # training seconds of the current attempt
        self.initial_loss: float | None = None
        self.lowest_loss: float | None = None  # lowest finite loss of the attempt
        self.peak: float | None = None  # best finite metric of the attempt, signed: higher is better
        self.params: dict[str, Any] = {}
        self.seed_key: str | int | None = None
        self.lineage: list[AttemptRecord] = [AttemptRecord(0, None, "first attempt")]
        self.finished = False

    @property
    def attempt(self) -> int:
        return self.lineage[-1].attempt

    def record(
        self,
        epoch: int,
        loss: float,
        metric: float,
        sign: float,
        grad_norm: float | None,
        dead_frac: float | None,
        seconds: float | None,
    ) -> float | None:
        """Take one epoch of the current attempt; return the seconds counted as training time.

        An epoch's ``seconds`` count from the second epoch on (start-up work goes into the
        first); a missing, negative or non-finite duration counts nothing (None). The loss and
        metric are kept as given; only finite ones move the lowest loss and the peak (``sign``
        makes higher better). A missing or NaN diagnostic is kept as NaN.
        """
        self.epoch = epoch
        counted = None
        if epoch > 1 and seconds is not None and math.isfinite(seconds) and seconds >= 0.0:
            counted = float(seconds)
            self.cost += counted
        if self.initial_loss is None:
            self.initial_loss = loss
        if math.isfinite(loss) and (self.lowest_loss is None or loss < self.lowest_loss):
            self.lowest_loss = float(loss)
        if math.isfinite(metric) and (self.peak is None or sign * metric > self.peak):
            self.peak = sign * float(metric)
        self.loss.append(float(loss))
        self.metric.append(float(metric))
        self.grad.append(_finite_or_nan(grad_norm))
        self.dead.append(_finite_or_nan(dead_frac))
        self.lineage[-1].epochs = epoch
        return counted

    def collapsed(self, chance: float | None, sign: float, margin: float, th: Thresholds) -> bool:
        """The attempt beat ``chance`` by more than ``margin``, then fell back to chance.

        Back at chance: its last ``th.window`` metrics all within ``th.chance_margin`` of it.
        """
        if len(self.metric) < th.window or not self.back_at_chance(chance, sign, margin, th):
            return False
        return all(abs(v - chance) <= th.chance_margin for v in list(self.metric)[-th.window :])  # type: ignore[operator]

    def back_at_chance(self, chance: float | None, sign: float, margin: float, th: Thresholds) -> bool:
        """The attempt beat ``chance`` by more than ``margin`` and its latest metric is back
        within ``th.chance_margin`` of it: a collapse may be under way."""
        if chance is None or self.peak is None or not self.metric:
            return False
        if self.peak - sign * chance <= margin:
            return False
        return abs(self.metric[-1] - chance) <= th.chance_margin

    def reset(self) -> None:
        """Forget the current attempt's curves and summary: a restart begins from scratch."""
        for series in (self.loss, self.metric, self.grad, self.dead):
            series.clear()
        self.epoch, self.initial_loss, self.lowest_loss, self.peak = 0, None, None, None
        self.cost = 0.0


def _finite_or_nan(value: float | None) -> float:
    return float(value) if value is not None else math.nan
