"""The plateau test and the trend measures of a curve that it and the diagnosis rules share.

NaN policy: a non-finite value counts as not measured: :func:`ls_slope` skips it,
:func:`last_window` and :func:`find_plateau` see no complete window while one is in it. Pure:
stdlib only.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from analysis.verdict import Thresholds

_INF = math.inf
Plateau = tuple[int, float, float, float]  # start index, level, spread, tolerance


def ls_slope(ys: Sequence[float]) -> float:
    """Least-squares slope per epoch of the finite values of ``ys`` (equally spaced; 0 if < 2)."""
    n = len(ys)
    if n >= 2 and math.isfinite(total := sum(ys)):  # all finite: the closed form
        return (sum(map(operator.mul, range(n), ys)) - (n - 1) / 2 * total) / (n * (n * n - 1) / 12)
    pts = [(i, v) for i, v in enumerate(ys) if math.isfinite(v)]
    if len(pts) < 2:
        return 0.0
    xm, ym = sum(i for i, _ in pts) / len(pts), sum(v for _, v in pts) / len(pts)
    return sum((i - xm) * (v - ym) for i, v in pts) / sum((i - xm) ** 2 for i, _ in pts)


def last_window(values: list[float] | None, w: int) -> list[float] | None:
    """The last ``w`` values when all of them are measured (finite), else None."""
    tail = None if values is None or len(values) < w else values[-w:]
    return tail if tail is not None and all(math.isfinite(v) for v in tail) else None


def loss_fall(loss: list[float], w: int) -> float:
    """How much the loss falls per ``w`` epochs, relative to its level, by its LS trend over 2 windows."""
    recent = [v for v in loss[-2 * w :] if math.isfinite(v)]
    level = abs(sum(recent)) / len(recent) if recent else 0.0
    return -ls_slope(recent) * w / level if level > 0.0 else 0.0


def find_plateau(
    y: list[float], sign: float, th: Thresholds, horizon: int, origin: float = 0.0
) -> Plateau | None:
    """Plateau rule on ``z = sign * y`` (lower is better): the last ``window`` values are finite
    with a range ``spread`` <= ``tol`` = ``rel_tol`` x |their median ``level`` - ``origin``| (the
    point levels are measured from, in units of ``y``), their minimum is
    within ``tol`` of the minimum before them (the curve stays lower), and the LS trend of the last
    2 windows gains < ``trend_frac`` x ``tol`` over ``horizon`` epochs. The plateau starts at the
    earliest index after which all values lie in one band of width ``tol``."""
    w = th.window
    if (tail := last_window(y, w)) is None:
        return None
    ordered = sorted(sign * v for v in tail)
    level = 0.5 * (ordered[(w - 1) // 2] + ordered[w // 2])
    tol, lo, hi = th.rel_tol * abs(level - sign * origin), ordered[0], ordered[-1]
    if hi - lo > tol:
        return None
    z = [sign * v for v in y]
    if lo > min((v for v in z[:-w] if math.isfinite(v)), default=_INF) + tol:
        return None
    if -ls_slope(z[-2 * w :]) * horizon > th.trend_frac * tol:
        return None
    spread, start = hi - lo, len(z) - w
    while start > 0 and math.isfinite(z[start - 1]):
        lo, hi = min(lo, z[start - 1]), max(hi, z[start - 1])
        if hi - lo > tol:
            break
        start -= 1
    return start, level, spread, tol
