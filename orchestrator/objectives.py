"""Several objectives (``objectives: [{metric: val_acc, mode: max}, {metric: params, mode: min}]``):
their validation, what they turn off, and the Pareto front of a finished sweep's trials.

The first objective is the primary metric: ``metric`` and ``mode`` become its, the convergence
diagnosis reads its curve, and the summary's "best" is on it. Optuna searches all of them (a study
with ``directions``); the sweep's result is the Pareto front (:mod:`analysis.pareto`). Rank pruning
(the rung rules) and predicted-worse pruning rank trials on one objective, so with several they
are off (a trial behind on accuracy may be on the front by its size), as Optuna's own pruners are
(they cannot prune a multi-objective study, optuna #3450); diverged, stuck and converged trials are
still stopped on the primary curve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from analysis.front import FRONT_STATUSES
from analysis.pareto import pareto_mask
from orchestrator.contract import METRIC_KEYS, OBJECTIVES, mode_of
from orchestrator.errors import ConfigError
from orchestrator.schema import SweepConfig

KEY = "objectives"
#: What a built-in trainable reports besides its contract keys that may be an objective
#: (``params``: the model's parameter count; ``time_this_iter_s``: Ray's epoch time).
BUILTIN_KEYS: tuple[str, ...] = (*METRIC_KEYS, "time_this_iter_s")
#: Directions known for the built-ins' keys.
KNOWN_MODES: dict[str, str] = {**OBJECTIVES, "params": "min", "time_this_iter_s": "min"}
#: Search algorithms that optimise several objectives (CMA-ES optimises one).
MULTI_SEARCH = ("nsga2", "tpe", "random", "grid")
#: Schedulers that do not rank trials on one objective.
MULTI_SCHEDULERS = ("convergence", "fifo")
#: Why the convergence policy's one-objective pruning rules are off with several objectives.
WHY_OFF = "off with several objectives: it ranks on one (Optuna cannot prune them either, #3450)"
#: The policy rules :data:`WHY_OFF` explains (as :func:`orchestrator.policy.rule_coverage` names them).
RULES_OFF = ("predicted_worse", "rank", "pause", "prior")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: a reported key and the direction that is better."""

    metric: str
    mode: str


def objectives_of(cfg: Any) -> tuple[Objective, ...]:
    """The validated config's objectives; empty for a one-objective sweep (or a config without
    the key, such as a summary's plain namespace)."""
    return tuple(Objective(o["metric"], o["mode"]) for o in getattr(cfg, "objectives", None) or ())


def several(cfg: SweepConfig) -> bool:
    """True when the sweep optimises several objectives."""
    return bool(cfg.objectives)


def why_off(cfg: SweepConfig) -> dict[str, str]:
    """The convergence rules the sweep's objectives turn off, each with why (none for one)."""
    return dict.fromkeys(RULES_OFF, WHY_OFF) if several(cfg) else {}


def multi_objective_settings(settings: Any) -> Any:
    """``scheduler.*`` (convergence) as a sweep of several objectives runs it: no rank rule
    (``inner=None``) and no predicted-worse pruning (``prune_predicted_worse=False``)."""
    return dataclasses.replace(settings, inner=None, prune_predicted_worse=False)


def _parse(value: Any, builtin: bool) -> list[Objective]:
    """``objectives`` as a list of :class:`Objective`; one ConfigError for a bad entry."""
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise ConfigError(
            f"{KEY}: must be a list of at least 2 {{metric: <key>, mode: max|min}} entries "
            f"(one objective: set metric and mode), got {value!r}"
        )
    found: list[Objective] = []
    for i, item in enumerate(value):
        key = f"{KEY}[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"metric", "mode"}:
            raise ConfigError(f"{key}: must be a mapping {{metric: <key>, mode: max|min}}, got {item!r}")
        metric, mode = item.get("metric"), item.get("mode")
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"{key}.metric: must be a reported key (a non-empty string), got {metric!r}")
        if metric in (o.metric for o in found):
            raise ConfigError(f"{key}.metric: {metric!r} is listed twice")
        if builtin and metric not in BUILTIN_KEYS:
            raise ConfigError(
                f"{key}.metric: the built-in trainables never report {metric!r} "
                f"(they report {', '.join(BUILTIN_KEYS)})"
            )
        mode = mode if mode is not None else KNOWN_MODES.get(metric) or mode_of(metric)
        if mode not in ("min", "max"):
            said = "required: its name does not say which is better" if mode is None else f"got {mode!r}"
            raise ConfigError(f"{key}.mode: must be max or min, {said}")
        found.append(Objective(metric, mode))
    return found


def apply_objectives(cfg: SweepConfig) -> SweepConfig:
    """Check ``objectives`` and make the first one ``metric`` and ``mode`` (the primary).

    Refused in one ConfigError line: fewer than 2 entries, a mode other than max/min (one not
    given comes from the key's name), a key listed twice, a key a built-in never reports, a
    ``metric`` other than the default or a ``mode`` that is not the first objective's, a
    search algorithm or scheduler that optimises or ranks one objective only.
    """
    if cfg.objectives is None:
        return cfg
    found = _parse(cfg.objectives, builtin=not cfg.trainable.own)
    first = found[0]
    if not cfg.trainable.own and first.metric not in OBJECTIVES:
        raise ConfigError(
            f"{KEY}[0].metric: the first objective is the curve the convergence diagnosis reads; for a "
            f"built-in trainable one of {', '.join(OBJECTIVES)}, got {first.metric!r}"
        )
    default = SweepConfig.metric
    if cfg.metric not in (default, first.metric):
        raise ConfigError(
            f"metric: conflicts with {KEY} (the first objective, {first.metric!r}, is the metric), "
            f"got {cfg.metric!r}"
        )
    if cfg.mode is not None and cfg.mode != first.mode:
        raise ConfigError(
            f"mode: conflicts with {KEY} (the first objective's mode is {first.mode!r}), got {cfg.mode!r}"
        )
    if cfg.search.algorithm not in MULTI_SEARCH:
        raise ConfigError(
            f"search.algorithm: {cfg.search.algorithm} optimises one objective; with {KEY} use "
            f"{', '.join(MULTI_SEARCH)}"
        )
    if cfg.scheduler.name not in MULTI_SCHEDULERS:
        raise ConfigError(
            f"scheduler.name: {cfg.scheduler.name} ranks trials on one objective; with {KEY} use "
            f"{' or '.join(MULTI_SCHEDULERS)}"
        )
    data = [dataclasses.asdict(o) for o in found]
    return dataclasses.replace(cfg, objectives=data, metric=first.metric, mode=first.mode)


def front_flags(rows: Iterable[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[bool]:
    """For each trial row (``values``: its final value per objective; ``status``), whether it is on
    the Pareto front of the trials that completed (not pruned, failed or interrupted)."""
    none = [None] * len(objectives)
    points = [(r.get("values") or none) if r.get("status") in FRONT_STATUSES else none for r in rows]
    return pareto_mask(points, [o.mode for o in objectives])
