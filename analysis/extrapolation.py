"""Extrapolation of a learning curve: parametric fits with an uncertainty band, and its optimistic end.

:func:`extrapolate` predicts a curve at a later epoch from power-law and exponential fits;
:func:`optimistic_final` (and :func:`optimistic_forecast`, which the predicted_worse rule uses)
add an allowance for late take-offs. NaN policy: non-finite points are dropped; fewer than 4
finite points give None. Pure: numpy and stdlib.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.verdict import DEFAULT_THRESHOLDS, Thresholds, mode_sign

_POW_B = np.geomspace(0.05, 4.0, 24)  # pow3: y = c - a * t**-b
_EXP_B = np.geomspace(0.1, 30.0, 24)  # exp3: y = c - a * exp(-b * t / t_last)
_FAMILIES: tuple[tuple[str, slice], ...] = (("pow3", slice(0, 24)), ("exp3", slice(24, 48)))
_FAMILY_RANGES = tuple(range(s.start, s.stop) for _, s in _FAMILIES)
_AIC_DELTA = 4.0  # fits within this many AIC units of the best one span the band


@dataclass(frozen=True)
class Prediction:
    """A predicted value at epoch ``at`` with its band ``low <= mean <= high``."""

    mean: float
    low: float
    high: float
    at: int
    family: str


@functools.lru_cache(maxsize=256)
def _basis(epochs: Sequence[int], at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Centred family bases at ``epochs``: (g - mean, sum of squares, g(at) - mean, last epoch)."""
    t, last, k = np.array(epochs, dtype=float), float(epochs[-1]), len(_POW_B)
    basis = np.empty((k + len(_EXP_B), t.size + 1))
    np.multiply.outer(_POW_B, np.append(np.log(t), math.log(at)), out=basis[:k])
    np.multiply.outer(_EXP_B, np.append(t, at) / last, out=basis[k:])
    np.exp(-basis, out=basis)
    basis -= basis[:, :-1].mean(axis=1, keepdims=True)
    gc, g_at = basis[:, :-1], basis[:, -1].copy()
    return gc, np.maximum(np.einsum("ij,ij->i", gc, gc), 1e-300), g_at, last


def extrapolate(
    curve: Sequence[float],
    at: int,
    *,
    mode: str = "max",
    bounds: tuple[float, float] | None = (0.0, 1.0),
    start_epoch: int = 1,
    origin: float = 0.0,
) -> Prediction | None:
    """Predict ``curve`` at epoch ``at`` from power-law and exponential fits, with a band.

    Families ``pow3`` y = c - a*t**-b and ``exp3`` y = c - a*exp(-b*t/t_last) are fitted by
    linear least squares for each b of a fixed grid, with a >= 0 for "max" (mirrored for "min";
    a wrongly signed fit becomes the constant), leaving out the first third of the points (the
    early transient) while 4 remain. ``mean`` weighs each family's best fit by AIC; the band
    spans the fits within 4 AIC units of the best, each family's best and the best fit's grid
    neighbours, widened by 2 residual standard deviations x sqrt(1 + distance / t_last), then
    clipped to ``bounds``. The residuals' floor is relative to the curve's level measured from
    ``origin`` (:func:`analysis.verdict.level_origin`). NaN policy: non-finite points are
    dropped (the rest keep their epochs); fewer than 4 finite points give None.
    """
    sign = mode_sign(mode)
    values = [float(v) for v in curve]
    kept = [i for i, v in enumerate(values) if math.isfinite(v)]
    count = len(kept)
    if count < 4 or at < 1:
        return None
    skip = min(count // 3, count - 4)
    if count < len(values):  # the kept epochs as a hashable sequence, for the cache
        epochs: Sequence[int] = tuple(i + start_epoch for i in kept[skip:])
        ys = [values[i] for i in kept[skip:]]
    else:
        epochs, ys = range(start_epoch + skip, start_epoch + len(values)), values[skip:]
    gc, sgg, g_at, last = _basis(epochs, at)
    n, y_mean = len(ys), sum(ys) / len(ys)
    yc = np.array(ys) - y_mean
    sgy = gc @ yc
    beta = np.minimum(sgy / sgg, 0.0) if sign < 0 else np.maximum(sgy / sgg, 0.0)
    floor = n * (1e-3 * (abs(y_mean - origin) + max(ys) - min(ys))) ** 2 + 1e-300
    sse = np.maximum(float(yc @ yc) + floor - beta * sgy, floor).tolist()  # residual sum of squares + floor
    pred = (y_mean + beta * g_at).tolist()
    best = min(range(len(sse)), key=sse.__getitem__)
    fams = [min(s, key=sse.__getitem__) for s in _FAMILY_RANGES]  # AIC differences are n log(sse ratio)
    weights = [(sse[k] / sse[best]) ** (-0.5 * n) for k in fams]
    mean = sum(w * pred[k] for w, k in zip(weights, fams, strict=True)) / sum(weights)
    fam = next(r for r in _FAMILY_RANGES if r.start <= best < r.stop)
    extra = [*fams, max(best - 1, fam.start), min(best + 1, fam.stop - 1)]  # family bests, grid neighbours
    near_sse = sse[best] * math.exp(_AIC_DELTA / n)
    near = [p for p, e in zip(pred, sse, strict=True) if e <= near_sse] + [pred[k] for k in extra]
    noise = 2.0 * math.sqrt(sse[best] / max(n - 3, 1) * (1.0 + max(at - last, 0) / last))
    low, high = min(min(near), mean) - noise, max(max(near), mean) + noise
    if bounds is not None:
        low, mean, high = (min(max(v, bounds[0]), bounds[1]) for v in (low, mean, high))
    top = max(range(len(fams)), key=weights.__getitem__)
    family = _FAMILIES[top][0] if weights[top] >= 0.9 * sum(weights) else "ensemble"
    return Prediction(mean=mean, low=low, high=high, at=int(at), family=family)


def optimistic_final(
    curve: Sequence[float],
    budget: int,
    *,
    mode: str = "max",
    start_epoch: int = 1,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    scale: float = 1.0,
    origin: float = 0.0,
) -> float | None:
    """The most a curve may plausibly still reach at ``budget``: its optimistic end.

    The better edge of :func:`extrapolate`'s band at ``budget`` (unbounded) plus
    ``predict_headroom`` x (1 - epoch / budget) of that edge's gap to the ideal (``scale`` for
    "max": 1 for a fraction, 100 for a percentage; 0 for "min"): an allowance for late
    take-offs that no fitted family foresees. None while the curve has fewer than 4 finite
    points (NaN policy of :func:`extrapolate`) or has reached ``budget``. ``origin``: see
    :func:`extrapolate`.
    """
    mode_sign(mode)  # a bad mode is a ValueError even at the budget
    if budget <= start_epoch + len(curve) - 1:
        return None
    headroom = thresholds.predict_headroom
    kw = {"mode": mode, "start_epoch": start_epoch, "headroom": headroom, "scale": scale, "origin": origin}
    found = optimistic_forecast(curve, budget, **kw)
    return None if found is None else found[1]


def optimistic_forecast(
    curve: Sequence[float],
    budget: int,
    *,
    mode: str,
    start_epoch: int,
    headroom: float,
    scale: float = 1.0,
    origin: float = 0.0,
) -> tuple[Prediction, float] | None:
    """The unbounded :func:`extrapolate` of ``curve`` at ``budget`` and its optimistic end.

    The optimistic end is the band's better edge plus ``headroom`` x (1 - epoch / budget) of
    that edge's gap to the ideal (``scale`` for "max", 0 for "min"), the epoch being the curve's last.
    None when :func:`extrapolate` gives None (fewer than 4 finite points). Every extrapolation
    of the diagnosis goes through here, calling this module's ``extrapolate`` by name.
    """
    sign = mode_sign(mode)
    pred = extrapolate(curve, budget, mode=mode, bounds=None, start_epoch=start_epoch, origin=origin)
    if pred is None:
        return None
    epoch = start_epoch + len(curve) - 1
    edge, ideal = (pred.low, 0.0) if sign > 0 else (pred.high, float(scale))
    return pred, edge - sign * headroom * (1.0 - epoch / budget) * max(sign * (edge - ideal), 0.0)
