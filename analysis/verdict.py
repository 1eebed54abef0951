"""The vocabulary of a diagnosis: the statuses, the frozen :class:`Verdict` and the :class:`Thresholds`.

A verdict names its status (one of :data:`STATUSES`), a one-line reason, the epoch it is about
and the numbers behind it; every threshold of the rules is validated when it is built. Pure:
stdlib only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

CONVERGED, DIVERGED, STUCK, OSCILLATING, PLATEAU_BAD, PREDICTED_WORSE, PROGRESSING = (
    "converged", "diverged", "stuck", "oscillating", "plateau_bad", "predicted_worse", "progressing",
)  # fmt: skip
STATUSES: tuple[str, ...] = (
    CONVERGED, DIVERGED, STUCK, OSCILLATING, PLATEAU_BAD, PREDICTED_WORSE, PROGRESSING)  # fmt: skip
_INF = math.inf
#: The thresholds in metric units: :meth:`Thresholds.scaled` multiplies them by the metric's scale.
METRIC_MARGINS: tuple[str, ...] = ("chance_margin", "bad_margin", "predict_margin")


@dataclass(frozen=True)
class Verdict:
    """What one diagnosis concluded, the epoch it is about and the numbers behind it (immutable).

    Evidence keys: all ``epochs`` (epochs observed); diverged ``epoch, loss`` (+ ``best_loss,
    ratio`` for blowup); stuck/chance ``chance, metric, deviation``; stuck/vanishing_grad
    ``grad_norm``; stuck/dead_relu ``dead_frac``; stuck/no_progress ``initial_loss, best_loss,
    improvement``; oscillating ``swing, slope``; converged ``level, spread, tolerance`` (+ ``best,
    gap`` for plateau_bad); predicted_worse ``mean, low, high, optimistic, best, at``.
    """

    status: str
    reason: str
    step: int | None
    evidence: Mapping[str, float]
    kind: str | None = None

    def __hash__(self) -> int:
        return hash((self.status, self.reason, self.step, tuple(self.evidence.items()), self.kind))


_LIMITS: dict[str, tuple[float, float, bool]] = {  # threshold: (lowest, highest, lowest excluded)
    "window": (2, _INF, False), "rel_tol": (0, _INF, True), "trend_frac": (0, _INF, True),
    "loss_trend": (0, _INF, True), "stuck_trend": (0, _INF, True), "min_epochs": (1, _INF, False),
    "grace": (0, _INF, False), "diverge_factor": (1, _INF, True), "diverge_patience": (1, _INF, False),
    "dead_frac": (0, 1, True), "chance_margin": (0, _INF, False), "progress_frac": (0, 1, False),
    "vanishing_grad": (0, _INF, False), "osc_rel_swing": (0, _INF, True), "bad_margin": (0, _INF, False),
    "predict_margin": (0, _INF, False), "predict_min_epochs": (1, _INF, False),
    "predict_headroom": (0, 1, False),
}  # fmt: skip


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the rules; the margins (:data:`METRIC_MARGINS`) are in units of the
    metric's scale (0.05 = 5 accuracy points on a fraction: see :meth:`scaled`)."""

    window: int = 5  # plateau window (epochs); oscillation and trends look at 2 windows
    rel_tol: float = 0.01  # converged: the window's range within this fraction of its level
    trend_frac: float = 0.25  # converged: the LS trend gains < this x band until the budget
    loss_trend: float = 0.05  # converged on a metric: the loss falls < this fraction per window
    stuck_trend: float = 0.01  # stuck/chance, no_progress: the loss falls < this fraction per window
    min_epochs: int = 5  # no converged / oscillating verdict before this many epochs
    grace: int = 5  # stuck verdicts only from this epoch on
    diverge_factor: float = 5.0  # blowup: loss > factor x best loss ...
    diverge_patience: int = 3  # ... for this many consecutive epochs
    chance_margin: float = 0.02  # chance: metric within this of chance; no_progress: metric gain at most
    progress_frac: float = 0.05  # no_progress: loss improved by less than this fraction of its initial value
    vanishing_grad: float = 1e-3  # vanishing_grad: grad norm below this for a window
    dead_frac: float = 0.9  # dead_relu: dead fraction at or above this for a window
    osc_rel_swing: float = 0.2  # oscillating: mean |change| / level above this, no improving trend
    bad_margin: float = 0.05  # plateau_bad: converged worse than best by more than this
    predict_margin: float = 0.02  # predicted_worse: optimistic end worse than best by more than this
    predict_min_epochs: int = 8  # predicted_worse only from this epoch on
    predict_headroom: float = 0.1  # share of the gap to the ideal (scale or 0) left open at epoch 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (problem := threshold_problem(f.name, value)) is not None:
                raise ValueError(f"Thresholds.{f.name} {problem}: got {f.name}={value!r}")

    def scaled(self, scale: float) -> Thresholds:
        """These thresholds with the margins in metric units (:data:`METRIC_MARGINS`) times ``scale``.

        ``scale`` 1 gives these very thresholds (so every comparison is as before). Cached: the
        diagnosis asks for it on every epoch.
        """
        return self if scale == 1.0 else _scaled(self, float(scale))


@functools.lru_cache(maxsize=64)
def _scaled(thresholds: Thresholds, scale: float) -> Thresholds:
    return replace(thresholds, **{name: getattr(thresholds, name) * scale for name in METRIC_MARGINS})


def threshold_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the threshold ``name`` ("must be int in [2, inf)"), or None.

    A threshold is a number of its field's type (an int where the field is one; never a bool)
    within its limits; NaN never is.
    """
    kind = next(f.type for f in fields(Thresholds) if f.name == name)
    low, high, open_low = _LIMITS[name]
    ok = isinstance(value, int if kind == "int" else (int, float)) and not isinstance(value, bool)
    if ok and (low < value if open_low else low <= value) and value <= high:
        return None
    return f"must be {kind} in {'(' if open_low else '['}{low}, {high}{')' if high == _INF else ']'}"


DEFAULT_THRESHOLDS = Thresholds()


def level_origin(mode: str, chance: float | None, scale: float) -> float:
    """Where a metric's level is measured from by the relative tests: 0, or ``scale`` for a "min"
    metric with a ``chance`` level (an error rate: its accuracy ``scale - metric`` is 0 there)."""
    return float(scale) if mode == "min" and chance is not None else 0.0


def mode_sign(mode: str) -> float:
    """The sign that makes lower better: +1 for "min", -1 for "max"; ValueError otherwise."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max': got {mode=}")
    return 1.0 if mode == "min" else -1.0
