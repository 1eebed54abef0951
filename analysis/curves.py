"""A trial's recorded curves, attempt by attempt (pure: stdlib only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class AttemptCurve:
    """One attempt of a trial: its seed and per-epoch values (epoch 1 first)."""

    attempt: int
    seed: int | None = None
    epochs: list[int] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)

    def add(self, epoch: int, values: Mapping[str, float]) -> None:
        """Append one epoch's values (keys missing from ``values`` get NaN)."""
        self.epochs.append(epoch)
        for key in set(self.series) | set(values):
            self.series.setdefault(key, [float("nan")] * (len(self.epochs) - 1))
            self.series[key].append(float(values.get(key, float("nan"))))
