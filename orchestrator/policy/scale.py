"""The metric's scale: the unit the policy's margins are measured in, given or measured.

A given scale (``PolicyConfig.scale``: 1 for a fraction, 100 for a percentage, the size of an
error metric) is used as it is. A measured one (``scale=None``, for "min" metrics: a fresh
model's error is the analogue of an accuracy's [0, 1] range when the ideal is 0) is the median
|metric| at epoch 1 over the first attempts seen so far, floored at :data:`MIN_SCALE`; before
any trial has reported a finite epoch-1 value it is the current result's |metric| (1 when that
is 0 or not finite).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

#: The smallest measured scale: a metric that starts at 0 still has a positive unit.
MIN_SCALE = 1e-12


class MetricScale:
    """The metric's unit: ``fixed``, or (None) measured from the first attempts' epoch-1 values.

    NaN policy: a non-finite metric is never an opening value; as the current result's value
    (before any opening) it gives the unit 1.
    """

    def __init__(self, fixed: float | None) -> None:
        self.fixed = fixed
        self.openings: dict[str, float] = {}  # trial id -> |metric| at epoch 1 of its first attempt
        self.unit: float = 1.0 if fixed is None else float(fixed)
        self._median: float | None = None

    def observe(self, trial_id: str, epoch: int, attempt: int, metric: float) -> float:
        """Take one result (epoch 1 of a first attempt is an opening value); return the unit now."""
        if self.fixed is not None:
            return self.unit
        value = abs(float(metric))
        if epoch == 1 and attempt == 0 and math.isfinite(value) and trial_id not in self.openings:
            self.openings[trial_id] = value
            self._median = None
        if self.openings:
            if self._median is None:
                self._median = max(statistics.median(self.openings.values()), MIN_SCALE)
            self.unit = self._median
        else:
            self.unit = value if math.isfinite(value) and value > 0.0 else 1.0
        return self.unit

    def state_dict(self) -> dict[str, Any]:
        """The opening values and the unit, as plain data."""
        return {"openings": dict(self.openings), "unit": self.unit}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a given scale stays the one given."""
        self.openings = {str(k): float(v) for k, v in state.get("openings", {}).items()}
        self._median = None
        if self.fixed is None:
            self.unit = float(state.get("unit", 1.0))
