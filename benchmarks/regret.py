"""Normalized regret of the best ``val_acc`` observed so far, over simulated time (as Syne Tune reports it).

``regret(t) = (top - best_so_far(t)) / (top - low)``, clipped to ``[0, 1]`` by construction:

- ``best_so_far(t)``: the highest ``val_acc`` any trial has *reported* at or before simulated time
  ``t`` (the reports ``compute_to_target`` reads, ``RepeatStats.best_trace``); before the first
  report, and while every report is below ``low``, it is ``low``: regret 1.
- ``top``: the highest ``val_acc`` anywhere in the bank (any configuration, seed and epoch). A
  replay reports intermediate values and, after a restart, other seeds' curves, and both can exceed
  the bank's best seed-0 final (digits: 0.9867 against 0.9822); with that final as ``top`` regret
  would go negative. With the bank's maximum it is >= 0 and does not depend on which schedulers
  ran (Syne Tune normalises by the range over all methods of a benchmark, which moves when a
  method is added).
- ``low``: the median over configurations of the seed-0 final ``val_acc``: regret 1 means "no
  better than a typical configuration's final". Chance is not declared for every bank (LCBench),
  and the bank's lowest value (one diverged epoch) squeezes every scheduler's regret near 0.
  When the median equals ``top``, ``low`` is the bank's floor; a bank whose values are all equal
  has no regret (``None``).

The grid: ``REGRET_POINTS`` points from 0 to a horizon, ``numpy.linspace(0, horizon, 100)``. The
horizon of a repeat is ASHA's makespan in that repeat (the same configuration order); when
``asha`` did not run, the largest makespan among the schedulers that did (the table says so).
Per scheduler: the mean regret over the grid in each repeat, then the interquartile mean (IQM:
the mean of the values left after cutting ``int(n / 4)`` from each end of the sorted values, as
``scipy.stats.trim_mean(x, 0.25)``) over repeats, with a percentile-bootstrap 95% interval
(``BOOTSTRAP_RESAMPLES`` resamples of the repeats, ``numpy`` Generator seeded ``BOOTSTRAP_SEED``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.bank import Bank
from benchmarks.metrics import BASELINE, RepeatStats

REGRET_POINTS = 100
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
IQM_CUT = 0.25
HORIZON_FALLBACK = "largest makespan"


@dataclass(frozen=True)
class RegretScale:
    """The values regret 0 (``top``) and regret 1 (``low``) stand for; ``top > low``."""

    top: float
    low: float


def regret_scale(bank: Bank) -> RegretScale | None:
    """Return the bank's normalisation (see the module docstring), ``None`` when every value is equal."""
    top = max(v for curves in bank.configs for run in curves.runs for v in run.val_acc)
    low = float(np.median([curves.runs[0].final_acc for curves in bank.configs]))
    if low >= top:
        low = bank.floor_acc
    return RegretScale(top=top, low=low) if low < top else None


def best_so_far(trace: Sequence[tuple[float, float]], grid: np.ndarray, low: float) -> np.ndarray:
    """Return the best value reported at or before each time of ``grid``, never below ``low``."""
    if not trace:
        return np.full(len(grid), low)
    times = np.array([t for t, _ in trace])
    values = np.maximum.accumulate(np.array([v for _, v in trace]))
    seen = np.searchsorted(times, grid, side="right")
    return np.maximum(np.where(seen > 0, values[np.maximum(seen - 1, 0)], low), low)


def mean_regret(
    trace: Sequence[tuple[float, float]], horizon: float, scale: RegretScale, points: int = REGRET_POINTS
) -> float:
    """Return the mean normalized regret of ``trace`` over ``points`` times from 0 to ``horizon``."""
    grid = np.linspace(0.0, horizon, points)
    return float(np.mean((scale.top - best_so_far(trace, grid, scale.low)) / (scale.top - scale.low)))


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Return the interquartile mean: the mean after cutting ``int(n * IQM_CUT)`` values from each end."""
    ordered = np.sort(np.asarray(values, dtype=float))
    cut = int(len(ordered) * IQM_CUT)
    return float(ordered[cut : len(ordered) - cut].mean())


def bootstrap_iqm_ci(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Return the percentile-bootstrap ``CI_LEVEL`` interval of the IQM of ``values`` (seeded)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    rng = np.random.default_rng(seed)
    samples = np.sort(x[rng.integers(0, n, size=(resamples, n))], axis=1)
    cut = int(n * IQM_CUT)
    means = samples[:, cut : n - cut].mean(axis=1)
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def horizons(stats: Mapping[str, Sequence[RepeatStats]]) -> tuple[list[float], str]:
    """Return each repeat's regret horizon and where it comes from (``asha`` or the fallback)."""
    if BASELINE in stats:
        return [s.sim_time for s in stats[BASELINE]], BASELINE
    per_repeat = zip(*stats.values(), strict=True)
    return [max(s.sim_time for s in repeat) for repeat in per_repeat], HORIZON_FALLBACK


def regret_figures(stats: Mapping[str, Sequence[RepeatStats]], bank: Bank) -> dict[str, dict[str, Any]]:
    """Return ``{scheduler: {regret_mean, regret_ci, regret_horizon}}`` for repeats of the same orders.

    ``regret_mean`` is the IQM over repeats of each repeat's mean regret, ``regret_ci`` its
    bootstrap interval ``[low, high]``; both ``None`` when the bank has no regret scale.
    """
    if not stats:
        return {}
    scale = regret_scale(bank)
    limits, source = horizons(stats)
    figures = {}
    for name, repeats in stats.items():
        if scale is None:
            figures[name] = {"regret_mean": None, "regret_ci": None, "regret_horizon": source}
            continue
        per_repeat = [mean_regret(s.best_trace, h, scale) for s, h in zip(repeats, limits, strict=True)]
        low, high = bootstrap_iqm_ci(per_repeat)
        figures[name] = {"regret_mean": iqm(per_repeat), "regret_ci": [low, high], "regret_horizon": source}
    return figures
