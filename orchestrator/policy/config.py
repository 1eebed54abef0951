"""The policy's settings: what a user chooses (:class:`PolicySettings`) and what the sweep fixes.

Every setting is validated on creation; a bad one is a :class:`SettingError` that names it and
says what is wrong once, as ``<key>: <problem>, got <value>`` (the config loader only prefixes
``scheduler.``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from analysis.convergence import Thresholds, threshold_problem

_NO_VALUE = object()


class SettingError(ValueError):
    """A setting is wrong: ``key`` (dotted, relative to the settings) and its ``problem``.

    The message is ``<key>: <problem>, got <value>``, or ``<key>: <problem>`` when no value
    is at fault (an unknown key).
    """

    def __init__(self, key: str, problem: str, value: Any = _NO_VALUE) -> None:
        self.key, self.problem, self.value = key, problem, value
        got = "" if value is _NO_VALUE else f", got {value!r}"
        super().__init__(f"{key}: {problem}{got}")


@dataclass(frozen=True)
class PolicySettings:
    """The decision rules' settings a user chooses, with their defaults; validated on creation.

    :class:`PolicyConfig` adds what the sweep fixes, ``orchestrator.policy.ConvergenceSettings``
    the rank rules and thresholds: both take these fields, and their defaults, from here.

    Args:
        max_restarts: restarts allowed per trial.
        restart_budget: fraction of the sweep's total epoch budget that restarts may spend.
        collapse_margin: an attempt whose best metric beat ``chance`` by more than this and
            that fell back to chance collapsed: it restarts.
        restart_trust: the first this many restarts of each kind of failure (collapsed, dead
            units, stuck, local minimum: :mod:`orchestrator.policy.restarts`) happen on trust ...
        restart_success: ... after that, a kind restarts while at least this share of its
            finished restarts ended better than the attempt they replaced (by more than the
            thresholds' ``chance_margin``).
        stop_converged: stop trials that converged.
        stop_min_left: ... only while at least this share of their budget is left.
        contender_margin: a converged trial within this of the best final (or above) runs on.
        prune_predicted_worse: prune trials whose extrapolated optimistic end loses to the leader.
        remedy_lr_factor: when set, an oscillating trial restarts with lr times this factor.
        remedy_leaky_relu: when true, a trial stuck with dead ReLUs restarts with leaky_relu.
        pause: a trial a rank rule cuts that learned and is within ``pause_margin`` of the
            rung's cutoff is paused with its checkpoint, not pruned; it resumes when it would
            pass its rung now, or when no new configuration is left (freeze-thaw:
            :mod:`orchestrator.policy.pausing`).
        pause_margin: ... how far below the cutoff (metric units) a paused trial may be.
    """

    max_restarts: int = 1
    restart_budget: float = 0.1
    collapse_margin: float = 0.2
    restart_trust: int = 1
    restart_success: float = 0.5
    stop_converged: bool = True
    stop_min_left: float = 0.25
    contender_margin: float = 0.005
    prune_predicted_worse: bool = True
    remedy_lr_factor: float | None = None
    remedy_leaky_relu: bool = False
    pause: bool = True
    pause_margin: float = 0.1

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise SettingError("max_restarts", "must be >= 0", self.max_restarts)
        for name in ("restart_budget", "restart_success", "stop_min_left"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(name, "must be in [0, 1]", getattr(self, name))
        if not self.collapse_margin > 0.0:
            raise SettingError("collapse_margin", "must be > 0", self.collapse_margin)
        if self.restart_trust < 0:
            raise SettingError("restart_trust", "must be >= 0", self.restart_trust)
        if not self.contender_margin >= 0.0:
            raise SettingError("contender_margin", "must be >= 0", self.contender_margin)
        if not isinstance(self.pause, bool):
            raise SettingError("pause", "must be true or false", self.pause)
        if isinstance(self.pause_margin, bool) or not self.pause_margin >= 0.0:
            raise SettingError("pause_margin", "must be >= 0", self.pause_margin)
        if self.remedy_lr_factor is not None and not 0.0 < self.remedy_lr_factor < 1.0:
            raise SettingError("remedy_lr_factor", "must be in (0, 1)", self.remedy_lr_factor)


@dataclass(frozen=True)
class PolicyConfig(PolicySettings):
    """Settings of the policy: the user's (:class:`PolicySettings`) and what the sweep fixes.

    Validated on creation (:class:`SettingError` naming the field).

    Args:
        mode: "max" when a higher metric is better, else "min".
        chance: the metric of a random guess (e.g. 0.1 for 10 classes), or None.
        scale: the unit of the margins in metric units (``collapse_margin``,
            ``contender_margin`` and the thresholds' :data:`analysis.verdict.METRIC_MARGINS`
            are multiplied by it); for "max" also the metric's ideal (1 for a fraction, 100 for
            a percentage). None ("min" only): measured, the median |metric| at epoch 1 of the
            first attempts so far (:attr:`ConvergencePolicy.scale`).
        history: epochs of each series kept per trial.
        thresholds: the thresholds of the diagnosis.
    """

    mode: str = "max"
    chance: float | None = None
    scale: float | None = 1.0
    history: int = 64
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise SettingError("mode", "must be 'max' or 'min'", self.mode)
        super().__post_init__()
        if (problem := scale_problem(self.scale, self.mode)) is not None:
            raise SettingError("scale", *problem)
        if self.history < 2 * self.thresholds.window:
            raise SettingError("history", "must be at least 2 x thresholds.window", self.history)


def scale_problem(scale: Any, mode: str) -> tuple[str] | tuple[str, Any] | None:
    """What is wrong with ``scale`` for a metric of ``mode``: (problem,) or (problem, value); None if fine.

    A scale is a finite number > 0 (not a bool), or None (measured) for "min" only.
    """
    if scale is None:
        return ("must be given for mode=max (the metric's best possible value)",) if mode == "max" else None
    number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not number or not (math.isfinite(scale) and scale > 0.0):
        return ("must be a finite number > 0, or null (measured, mode=min only)", scale)
    return None


def thresholds_from(values: Mapping[str, Any]) -> Thresholds:
    """Thresholds with ``values`` overriding the defaults; an unknown or bad one is a SettingError.

    The error's key is ``thresholds.<name>``; its problem is the one
    :func:`analysis.convergence.threshold_problem` states.
    """
    known = [f.name for f in fields(Thresholds)]
    for name, value in values.items():
        if name not in known:
            raise SettingError(f"thresholds.{name}", f"unknown threshold (known: {', '.join(sorted(known))})")
        if (problem := threshold_problem(name, value)) is not None:
            raise SettingError(f"thresholds.{name}", problem, value)
    return Thresholds(**values)
