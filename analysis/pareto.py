"""The Pareto front of points scored on several objectives (pure: numpy).

A point dominates another when it is at least as good on every objective and strictly better on
at least one ("better": larger for ``max``, smaller for ``min``). The front is the set of points no
other point dominates; equal points are all on it. NaN policy: a point with a missing (None) or
non-finite value on any objective is never on the front and dominates nothing (a diverged trial
is no trade-off).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MODES = ("min", "max")


def _as_costs(values: Sequence[Sequence[float | None]], modes: Sequence[str]) -> np.ndarray:
    """``values`` (points x objectives) as costs to minimise: ``max`` columns negated, None as NaN."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be 'min' or 'max', got {mode=}")
    rows = [[np.nan if v is None else float(v) for v in point] for point in values]
    costs = np.array(rows, dtype=float).reshape(len(rows), len(modes))
    return costs * np.where(np.array(modes) == "max", -1.0, 1.0)


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """True when point ``a`` dominates point ``b`` (both finite on every objective)."""
    ca, cb = _as_costs([a, b], modes)
    if not (np.isfinite(ca).all() and np.isfinite(cb).all()):
        return False
    return bool((ca <= cb).all() and (ca < cb).any())


def pareto_mask(values: Sequence[Sequence[float | None]], modes: Sequence[str]) -> list[bool]:
    """For each point, whether it is on the Pareto front of ``values`` under ``modes``.

    ``values`` holds one row per point, one column per objective (``modes`` in the same order).
    O(n^2) comparisons, vectorised per point: fine for the thousands of trials of a sweep.
    """
    if not modes:
        raise ValueError(f"at least one objective is needed, got {modes=}")
    costs = _as_costs(values, modes)
    finite = np.isfinite(costs).all(axis=1)
    pool = costs[finite]
    mask = []
    for i, point in enumerate(costs):
        if not finite[i]:
            mask.append(False)
            continue
        beaten = (pool <= point).all(axis=1) & (pool < point).any(axis=1)
        mask.append(not bool(beaten.any()))
    return mask


def pareto_front(values: Sequence[Sequence[float | None]], modes: Sequence[str]) -> list[int]:
    """The indices of the points on the Pareto front, in input order."""
    return [i for i, on in enumerate(pareto_mask(values, modes)) if on]


__all__ = ["MODES", "dominates", "pareto_front", "pareto_mask"]
