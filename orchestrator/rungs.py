"""ASHA-style rungs over plain numbers: an inner rank rule for the convergence policy.

Pure (stdlib only). Values are "higher is better" (the policy flips the sign for "min").
"""

from __future__ import annotations

import bisect
import math
from typing import Any


class AshaRungs:
    """Prune a trial that reaches a rung below the top ``1 / reduction_factor`` of that rung.

    Rungs sit at ``grace_period * reduction_factor**k`` epochs below ``max_t``. When a trial
    reaches a rung its value is recorded there. Asynchronous, like ASHA: while a rung holds
    fewer than ``reduction_factor`` values every trial passes it; after that a value below
    the rung's ``1 - 1/reduction_factor`` quantile is pruned. NaN counts as the worst value.
    """

    def __init__(self, grace_period: int = 1, reduction_factor: float = 4.0, max_t: int = 100) -> None:
        if grace_period < 1:
            raise ValueError(f"grace_period must be >= 1, got {grace_period=}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor=}")
        if max_t < grace_period:
            raise ValueError(f"max_t must be >= grace_period, got {max_t=}")
        self.reduction_factor = reduction_factor
        self.rungs: list[int] = []
        level = float(grace_period)
        while level < max_t:
            self.rungs.append(int(level))
            level *= reduction_factor
        self.recorded: dict[int, list[float]] = {r: [] for r in self.rungs}  # sorted values
        self.seen: set[tuple[str, int]] = set()

    def should_prune(self, trial_id: str, epoch: int, value: float) -> bool:
        """Record ``value`` when ``epoch`` is a rung (once per trial) and say whether it is cut."""
        if epoch not in self.recorded or (trial_id, epoch) in self.seen:
            return False
        self.seen.add((trial_id, epoch))
        value = value if math.isfinite(value) else -math.inf
        values = self.recorded[epoch]
        bisect.insort(values, value)
        if len(values) < self.reduction_factor:
            return False
        cutoff = values[min(len(values) - 1, int(len(values) * (1 - 1 / self.reduction_factor)))]
        return value < cutoff

    def state_dict(self) -> dict[str, Any]:
        return {
            "recorded": {str(r): v for r, v in self.recorded.items()},
            "seen": sorted([list(s) for s in self.seen]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorded = {int(r): list(v) for r, v in state["recorded"].items()}
        self.seen = {(str(t), int(e)) for t, e in state["seen"]}
