"""A finished sweep as plain data: one :class:`TrialRecord` per trial (pure: stdlib only).

Both sources of a sweep (its Ray results directory and its MLflow parent run, see
:mod:`analysis.load`) are read into these records, so every report is computed the same way
whichever source it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis.curves import AttemptCurve

#: Trial config keys that are bookkeeping, not hyperparameters (the sweep and its records agree).
BOOKKEEPING: tuple[str, ...] = ("run", "attempt", "trial_index", "epochs")


def has_epoch(result: Mapping[str, Any]) -> bool:
    """The result's ``epoch`` is a whole number >= 1 (the step of the metric contract)."""
    epoch = result.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or not math.isfinite(epoch):
        return False
    return epoch >= 1 and float(epoch).is_integer()


def hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters: its config without the :data:`BOOKKEEPING` keys."""
    return {k: v for k, v in config.items() if k not in BOOKKEEPING}


#: Final statuses, in the order reports list them.
STATUSES = ("CONVERGED", "COMPLETED", "PRUNED", "STOPPED_EARLY", "ERROR", "INTERRUPTED")


def final_status(
    last_result: dict[str, Any], budget: int, *, errored: bool, action: str | None = None
) -> str:
    """How a trial ended, by the first rule that holds.

    ERROR when it raised; CONVERGED / PRUNED when the convergence scheduler stopped it
    (``action`` "stop" / "prune"); COMPLETED when it trained its whole budget; else
    STOPPED_EARLY (another scheduler stopped it).
    """
    if errored:
        return "ERROR"
    if action == "stop":
        return "CONVERGED"
    if action == "prune":
        return "PRUNED"
    return "COMPLETED" if int(last_result.get("epoch", 0)) >= int(budget) else "STOPPED_EARLY"


def parse_value(text: str) -> Any:
    """A logged parameter's text back as the value it was: int, float, bool, None or the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


@dataclass
class TrialRecord:
    """One trial: its hyperparameters, how it ended, and every attempt's curves.

    Series keys in each attempt: the sweep's metric, ``val_loss``, ``train_loss``,
    ``time_this_iter_s`` (seconds per epoch) and ``time`` (wall-clock seconds at the end of
    the epoch), as far as the source recorded them.
    """

    trial_id: str
    name: str
    params: dict[str, Any]
    status: str
    budget: int
    attempts: list[AttemptCurve] = field(default_factory=list)
    verdict: str | None = None
    reason: str | None = None
    decision_reason: str | None = None
    restart_reasons: list[str] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        """Epochs trained over all attempts."""
        return sum(len(a.epochs) for a in self.attempts)

    @property
    def restarts(self) -> int:
        return max(0, len(self.attempts) - 1)

    def final(self, metric: str) -> float | None:
        """The metric at the last epoch of the last attempt (None if not finite)."""
        if not self.attempts:
            return None
        values = self.attempts[-1].series.get(metric) or []
        if not values or values[-1] is None or not math.isfinite(values[-1]):
            return None
        return float(values[-1])

    def best_of_attempt(self, attempt: int, metric: str, sign: float) -> float | None:
        """The best finite metric value of one attempt; ``sign`` +1 when higher is better."""
        values = _finite(self.attempts[attempt].series.get(metric) or [])
        if not values:
            return None
        return max(values) if sign > 0 else min(values)


@dataclass
class SweepRecord:
    """A finished (or interrupted) sweep: its settings and its trials in sweep order."""

    name: str
    metric: str
    mode: str
    trials: list[TrialRecord]
    source: str
    thresholds: dict[str, Any] = field(default_factory=dict)
    objectives: list[tuple[str, str]] = field(default_factory=list)  # several: (metric, mode) each

    @property
    def sign(self) -> float:
        """+1 when a higher metric is better."""
        return 1.0 if self.mode == "max" else -1.0
