"""Convergence diagnosis of one learning curve: pure functions over plain numbers.

:func:`diagnose` gives an online :class:`Verdict` on the epochs of a running trial so far;
:func:`convergence_epoch` and :func:`extrapolate` serve offline reports with the same rules.
Epochs are 1-based within an attempt. NaN policy: a non-finite loss at the latest epoch is a
divergence; any other non-finite value (an earlier loss, a metric, grad norm or dead fraction)
counts as "not measured", and a rule needing a window of measurements waits while one is
missing. Defaults are calibrated on ``benchmarks/curves`` (tests/test_convergence_bank.py).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

CONVERGED, DIVERGED, STUCK, OSCILLATING, PLATEAU_BAD, PREDICTED_WORSE, PROGRESSING = (
    "converged", "diverged", "stuck", "oscillating", "plateau_bad", "predicted_worse", "progressing",
)  # fmt: skip
STATUSES: tuple[str, ...] = (
    CONVERGED, DIVERGED, STUCK, OSCILLATING, PLATEAU_BAD, PREDICTED_WORSE, PROGRESSING)  # fmt: skip
_POW_B = np.geomspace(0.05, 4.0, 24)  # pow3: y = c - a * t**-b
_EXP_B = np.geomspace(0.1, 30.0, 24)  # exp3: y = c - a * exp(-b * t / t_last)
_FAMILIES: tuple[tuple[str, slice], ...] = (("pow3", slice(0, 24)), ("exp3", slice(24, 48)))
_FAMILY_RANGES = tuple(range(s.start, s.stop) for _, s in _FAMILIES)
_AIC_DELTA = 4.0  # fits within this many AIC units of the best one span the band
_INF, _NAN = math.inf, math.nan
_Plateau = tuple[int, float, float, float]  # start index, level, spread, tolerance


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
    """Every threshold of the rules; the margins are in metric units (0.05 = 5 accuracy points)."""

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
    predict_headroom: float = 0.1  # share of the gap to the ideal (1 or 0) left open at epoch 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (problem := threshold_problem(f.name, value)) is not None:
                raise ValueError(f"Thresholds.{f.name} {problem}: got {f.name}={value!r}")


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


@dataclass(frozen=True)
class Prediction:
    """A predicted value at epoch ``at`` with its band ``low <= mean <= high``."""

    mean: float
    low: float
    high: float
    at: int
    family: str


def _sign(mode: str) -> float:
    """The sign that makes lower better: +1 for "min", -1 for "max"; ValueError otherwise."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max': got {mode=}")
    return 1.0 if mode == "min" else -1.0


def _verdict(status: str, reason: str, step: int | None, kind: str | None = None, **ev: float) -> Verdict:
    return Verdict(status, reason, step, types.MappingProxyType({k: float(v) for k, v in ev.items()}), kind)


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
) -> Prediction | None:
    """Predict ``curve`` at epoch ``at`` from power-law and exponential fits, with a band.

    Families ``pow3`` y = c - a*t**-b and ``exp3`` y = c - a*exp(-b*t/t_last) are fitted by
    linear least squares for each b of a fixed grid, with a >= 0 for "max" (mirrored for "min";
    a wrongly signed fit becomes the constant), leaving out the first third of the points (the
    early transient) while 4 remain. ``mean`` weighs each family's best fit by AIC; the band
    spans the fits within 4 AIC units of the best, each family's best and the best fit's grid
    neighbours, widened by 2 residual standard deviations x sqrt(1 + distance / t_last), then
    clipped to ``bounds``. NaN policy: non-finite points are dropped (the rest keep their
    epochs); fewer than 4 finite points give None.
    """
    sign = _sign(mode)
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
    floor = n * (1e-3 * (abs(y_mean) + max(ys) - min(ys))) ** 2 + 1e-300
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


def _slope(ys: Sequence[float]) -> float:
    """Least-squares slope per epoch of the finite values of ``ys`` (equally spaced; 0 if < 2)."""
    n = len(ys)
    if n >= 2 and math.isfinite(total := sum(ys)):  # all finite: the closed form
        return (sum(map(operator.mul, range(n), ys)) - (n - 1) / 2 * total) / (n * (n * n - 1) / 12)
    pts = [(i, v) for i, v in enumerate(ys) if math.isfinite(v)]
    if len(pts) < 2:
        return 0.0
    xm, ym = sum(i for i, _ in pts) / len(pts), sum(v for _, v in pts) / len(pts)
    return sum((i - xm) * (v - ym) for i, v in pts) / sum((i - xm) ** 2 for i, _ in pts)


def _last(values: list[float] | None, w: int) -> list[float] | None:
    """The last ``w`` values when all of them are measured (finite), else None."""
    tail = None if values is None or len(values) < w else values[-w:]
    return tail if tail is not None and all(math.isfinite(v) for v in tail) else None


def _loss_fall(loss: list[float], w: int) -> float:
    """How much the loss falls per ``w`` epochs, relative to its level, by its LS trend over 2 windows."""
    recent = [v for v in loss[-2 * w :] if math.isfinite(v)]
    level = abs(sum(recent)) / len(recent) if recent else 0.0
    return -_slope(recent) * w / level if level > 0.0 else 0.0


def _plateau(y: list[float], sign: float, th: Thresholds, horizon: int) -> _Plateau | None:
    """Plateau rule on ``z = sign * y`` (lower is better): the last ``window`` values are finite
    with a range ``spread`` <= ``tol`` = ``rel_tol`` x |their median ``level``|, their minimum is
    within ``tol`` of the minimum before them (the curve stays lower), and the LS trend of the last
    2 windows gains < ``trend_frac`` x ``tol`` over ``horizon`` epochs. The plateau starts at the
    earliest index after which all values lie in one band of width ``tol``."""
    w = th.window
    if (tail := _last(y, w)) is None:
        return None
    ordered = sorted(sign * v for v in tail)
    level = 0.5 * (ordered[(w - 1) // 2] + ordered[w // 2])
    tol, lo, hi = th.rel_tol * abs(level), ordered[0], ordered[-1]
    if hi - lo > tol:
        return None
    z = [sign * v for v in y]
    if lo > min((v for v in z[:-w] if math.isfinite(v)), default=_INF) + tol:
        return None
    if -_slope(z[-2 * w :]) * horizon > th.trend_frac * tol:
        return None
    spread, start = hi - lo, len(z) - w
    while start > 0 and math.isfinite(z[start - 1]):
        lo, hi = min(lo, z[start - 1]), max(hi, z[start - 1])
        if hi - lo > tol:
            break
        start -= 1
    return start, level, spread, tol


def convergence_epoch(
    curve: Sequence[float], *, thresholds: Thresholds = DEFAULT_THRESHOLDS, mode: str = "min"
) -> int | None:
    """Offline: the first epoch of the plateau the curve ends on, or None if it ends off a plateau.

    The converged rule of :func:`diagnose` at the last epoch with a one-window trend horizon:
    the last ``window`` epochs lie within ``rel_tol`` of their median, are not worse than any
    earlier epoch by more than that band and show no trend; the answer is the earliest epoch
    after which every value stays in one band of that width (the ``step`` of ``diagnose(curve)``
    when it says converged). Under ``min_epochs`` epochs: None. A non-finite value ends the plateau.
    """
    sign = _sign(mode)
    if len(curve) < thresholds.min_epochs:
        return None
    found = _plateau([float(v) for v in curve], sign, thresholds, thresholds.window)
    return None if found is None else found[0] + 1


class _Curves(NamedTuple):
    """The observed epochs as plain lists, with what the rules need to know about them."""

    loss: list[float]
    metric: list[float] | None
    sign: float  # the target's: +1 lower is better, -1 higher is better
    grad: list[float] | None
    dead: list[float] | None
    epoch: int  # the latest epoch
    start_epoch: int
    init: float  # loss at epoch 1
    lowest: float  # lowest finite loss so far
    budget: int | None
    best: float | None
    chance: float | None

    @property
    def target(self) -> list[float]:
        return self.loss if self.metric is None else self.metric


def _as_list(name: str, values: Sequence[float] | None, n: int) -> list[float] | None:
    """``values`` as a list of floats (None -> nan); None stays None; a wrong length is a ValueError."""
    if values is None:
        return None
    try:
        out = list(map(float, values))
    except TypeError:  # None in it
        out = [_NAN if v is None else float(v) for v in values]
    if len(out) != n:
        raise ValueError(f"{name} must hold one value per loss epoch: got {len(out)=} vs {n=}")
    return out


def diagnose(
    loss: Sequence[float],
    *,
    metric: Sequence[float] | None = None,
    mode: str = "max",
    grad_norm: Sequence[float] | None = None,
    dead_frac: Sequence[float] | None = None,
    budget: int | None = None,
    best: float | None = None,
    chance: float | None = None,
    start_epoch: int = 1,
    initial_loss: float | None = None,
    best_loss: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Verdict:
    """Online: the first rule that fires of diverged, stuck, oscillating, converged, predicted_worse.

    converged turns plateau_bad when ``best`` is given and the plateau is worse by more than
    ``bad_margin``; no rule firing is progressing. The target is ``metric`` (better in direction
    ``mode``) when given, else ``loss`` (lower is better); ``best``, the best final target of the
    other trials, is in target units. Series hold one value per epoch, ``loss[0]`` at epoch
    ``start_epoch``: a caller keeping only a recent window passes ``initial_loss`` (the loss at
    epoch 1; default ``loss[0]``) and ``best_loss`` (the lowest loss before the window); the
    plateau start, "stays lower", the metric's baseline and the extrapolation see only the window.

    Raises:
        ValueError: empty ``loss``, series of unequal length, bad ``mode`` or ``start_epoch``.
    """
    sign = _sign(mode)
    losses = _as_list("loss", loss, len(loss))
    if not losses or start_epoch < 1:
        raise ValueError(f"loss needs >= 1 epoch and start_epoch >= 1: got {len(loss)=}, {start_epoch=}")
    n, epoch = len(losses), start_epoch + len(losses) - 1
    init = losses[0] if initial_loss is None else float(initial_loss)
    lowest = min(filter(math.isfinite, losses), default=_INF)
    lowest = min(lowest, _INF if best_loss is None else best_loss)
    metrics = _as_list("metric", metric, n)
    grad, dead = _as_list("grad_norm", grad_norm, n), _as_list("dead_frac", dead_frac, n)
    sign = sign if metrics is not None else 1.0
    c = _Curves(losses, metrics, sign, grad, dead, epoch, start_epoch, init, lowest, budget, best, chance)
    for rule in (_diverged, _stuck, _oscillating, _converged, _predicted_worse):
        if (verdict := rule(c, thresholds)) is not None:
            return verdict
    return _verdict(PROGRESSING, f"progressing at epoch {epoch}", epoch, epochs=epoch)


def _diverged(c: _Curves, th: Thresholds) -> Verdict | None:
    """Diverged: the latest loss is non-finite, or ``diverge_patience`` epochs above factor x best loss.

    The reference "best loss" is the lowest finite loss so far, or the loss of a uniform guess
    (ln(1/chance)) when that is lower and the metric has stayed within ``chance_margin`` of
    ``chance`` over those epochs: a run that blew up in its first epoch and learns nothing has
    diverged too (a large loss alone is not enough: overconfident runs can score well).
    """
    if not math.isfinite(c.loss[-1]):
        reason, epoch = f"diverged at epoch {c.epoch}: val_loss is {c.loss[-1]}", c.epoch
        return _verdict(DIVERGED, reason, epoch, "nonfinite", epoch=epoch, loss=c.loss[-1], epochs=epoch)
    p, reference = th.diverge_patience, c.lowest
    guessing = c.metric is not None and c.chance is not None and 0.0 < c.chance < 1.0
    if guessing and all(abs(m - c.chance) <= th.chance_margin for m in c.metric[-p:]):
        reference = min(reference, math.log(1.0 / c.chance))
    limit = th.diverge_factor * reference
    if len(c.loss) < p or not 0.0 < reference < _INF or not all(v > limit for v in c.loss[-p:]):
        return None
    first = len(c.loss) - p
    while first > 0 and c.loss[first - 1] > limit:  # NaN compares False: it ends the run
        first -= 1
    step, ratio = c.epoch - (len(c.loss) - 1 - first), c.loss[-1] / reference
    reason = f"diverged at epoch {step}: val_loss {c.loss[-1]:.3g} is {ratio:.0f}x its best {reference:.3g}"
    evidence = {"epoch": step, "loss": c.loss[-1], "best_loss": reference, "ratio": ratio, "epochs": c.epoch}
    return _verdict(DIVERGED, reason, step, "blowup", **evidence)


def _stuck(c: _Curves, th: Thresholds) -> Verdict | None:
    """Stuck, from epoch ``grace`` on, over the last ``window`` epochs: the first of four kinds.

    dead_relu: dead fraction >= ``dead_frac``; vanishing_grad: grad norm < ``vanishing_grad``;
    chance: metric within ``chance_margin`` of ``chance``; no_progress: the lowest loss is less
    than ``progress_frac`` below the initial loss (at least ln(1/chance), a uniform guess's
    cross-entropy, when ``chance`` is given) and the metric, if any, never beat its first value
    by more than ``chance_margin``. chance and no_progress wait while the loss still falls by
    ``stuck_trend`` of its level per window or more.
    """
    w, epoch = th.window, c.epoch
    if epoch < th.grace:
        return None
    if (tail := _last(c.dead, w)) is not None and min(tail) >= th.dead_frac:
        reason = f"stuck: {tail[-1]:.0%} of ReLU units dead after {epoch} epochs"
        return _verdict(STUCK, reason, epoch, "dead_relu", dead_frac=tail[-1], epochs=epoch)
    if (tail := _last(c.grad, w)) is not None and max(tail) < th.vanishing_grad:
        reason = f"stuck: grad norm {tail[-1]:.2g} below {th.vanishing_grad:g} for {w} epochs"
        return _verdict(STUCK, reason, epoch, "vanishing_grad", grad_norm=tail[-1], epochs=epoch)
    if _loss_fall(c.loss, w) >= th.stuck_trend:
        return None
    tail = _last(c.metric, w)
    if tail is not None and c.chance is not None:
        deviation = max(abs(v - c.chance) for v in tail)
        if deviation <= th.chance_margin:
            reason = f"stuck: metric {tail[-1]:.3g} at chance {c.chance:.3g} ±{deviation:.3f} for {w} epochs"
            evidence = {"chance": c.chance, "metric": tail[-1], "deviation": deviation, "epochs": epoch}
            return _verdict(STUCK, reason, epoch, "chance", **evidence)
    init = max(c.init, -math.log(c.chance)) if c.chance is not None and 0.0 < c.chance < 1.0 else c.init
    measured = math.isfinite(init) and init > 0.0 and math.isfinite(c.lowest)
    if not measured or (improvement := (init - min(c.lowest, init)) / init) >= th.progress_frac:
        return None
    seen = [c.sign * v for v in c.metric or () if math.isfinite(v)]
    if c.metric is not None and (tail is None or min(seen) < seen[0] - th.chance_margin):
        return None  # the metric moved: progress that the loss does not show (yet)
    reason = f"stuck: val_loss improved {improvement:.1%} on its initial {init:.3g} in {epoch} epochs"
    evidence = {"initial_loss": init, "best_loss": c.lowest, "improvement": improvement, "epochs": epoch}
    return _verdict(STUCK, reason, epoch, "no_progress", **evidence)


def _oscillating(c: _Curves, th: Thresholds) -> Verdict | None:
    """Oscillating: over the last 2 windows of the target, mean |change| / level > ``osc_rel_swing``
    with no improving LS trend."""
    tail = _last(c.target, 2 * th.window)
    if c.epoch < th.min_epochs or tail is None:
        return None
    level = abs(sum(tail)) / len(tail)
    swing = sum(abs(b - a) for a, b in itertools.pairwise(tail)) / (len(tail) - 1) / max(level, 1e-300)
    slope = c.sign * _slope(tail)  # > 0: getting worse
    if swing <= th.osc_rel_swing or slope < 0.0:
        return None
    reason = f"oscillating: swings of {swing:.0%} per epoch with no improving trend over {len(tail)} epochs"
    return _verdict(OSCILLATING, reason, c.epoch, swing=swing, slope=slope, epochs=c.epoch)


def _converged(c: _Curves, th: Thresholds) -> Verdict | None:
    """Converged: the target is on a plateau (:func:`_plateau`; trend horizon: the epochs left to the
    budget, at least a window), not at chance level, and with a metric the loss falls < ``loss_trend``
    per window; plateau_bad if worse than ``best`` by > ``bad_margin``."""
    horizon = th.window if c.budget is None else max(th.window, c.budget - c.epoch)
    found = None if c.epoch < th.min_epochs else _plateau(c.target, c.sign, th, horizon)
    if found is None or (c.metric is not None and _loss_fall(c.loss, th.window) >= th.loss_trend):
        return None
    start, level, spread, tol = found
    step = c.epoch - (len(c.target) - 1 - start)
    level, window_best = c.sign * level, c.sign * min(c.sign * v for v in c.target[-th.window :])
    if c.chance is not None and c.metric is not None and abs(level - c.chance) <= th.chance_margin:
        return None  # a plateau at chance level is for the stuck rule to judge
    evidence = {"level": level, "spread": spread, "tolerance": tol, "epochs": c.epoch}
    if c.best is not None and c.sign * (window_best - c.best) > th.bad_margin:
        reason = f"plateau at a bad level since epoch {step}: {level:.4g} vs best {c.best:.4g}"
        return _verdict(PLATEAU_BAD, reason, step, best=c.best, gap=abs(window_best - c.best), **evidence)
    rel = spread / abs(level) if level else 0.0
    reason = f"converged at epoch {step} (last {th.window} epochs within {rel:.1%} of {level:.4g})"
    return _verdict(CONVERGED, reason, step, **evidence)


def optimistic_final(
    curve: Sequence[float],
    budget: int,
    *,
    mode: str = "max",
    start_epoch: int = 1,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> float | None:
    """The most a curve may plausibly still reach at ``budget``: its optimistic end.

    The better edge of :func:`extrapolate`'s band at ``budget`` (unbounded) plus
    ``predict_headroom`` x (1 - epoch / budget) of that edge's gap to the ideal (1 for "max",
    0 for "min"): an allowance for late take-offs that no fitted family foresees. None while
    the curve has fewer than 4 finite points (NaN policy of :func:`extrapolate`) or has reached
    ``budget``.
    """
    sign = _sign(mode)
    epoch = start_epoch + len(curve) - 1
    if budget <= epoch:
        return None
    if (pred := extrapolate(curve, budget, mode=mode, bounds=None, start_epoch=start_epoch)) is None:
        return None
    return _optimistic(pred, sign, epoch, budget, thresholds.predict_headroom)


def _optimistic(pred: Prediction, sign: float, epoch: int, budget: int, headroom: float) -> float:
    edge, ideal = (pred.low, 0.0) if sign > 0 else (pred.high, 1.0)
    return edge - sign * headroom * (1.0 - epoch / budget) * max(sign * (edge - ideal), 0.0)


def _predicted_worse(c: _Curves, th: Thresholds) -> Verdict | None:
    """Predicted worse: from ``predict_min_epochs`` on, the optimistic end at ``budget``
    (:func:`optimistic_final`) loses to ``best`` by more than ``predict_margin``.

    Every fitted family is monotone towards better, so no fit ends worse than the mean of the
    points it fits: when that mean is within the margin the curve is not fitted at all.
    """
    if c.budget is None or c.best is None or c.epoch < th.predict_min_epochs or c.budget <= c.epoch:
        return None
    sign, mode = c.sign, "min" if c.sign > 0 else "max"
    finite = [v for v in c.target if math.isfinite(v)]
    fitted = finite[min(len(finite) // 3, len(finite) - 4) :] if len(finite) >= 4 else None
    if fitted is None or sign * (sum(fitted) / len(fitted) - c.best) <= th.predict_margin:
        return None
    if (pred := extrapolate(c.target, c.budget, mode=mode, bounds=None, start_epoch=c.start_epoch)) is None:
        return None
    optimistic = _optimistic(pred, sign, c.epoch, c.budget, th.predict_headroom)
    if sign * (optimistic - c.best) <= th.predict_margin:
        return None
    band = f"{pred.mean:.3g} ± {(pred.high - pred.low) / 2:.2g}"
    reason = f"predicted worse: {band} at epoch {c.budget} vs best {c.best:.3g}"
    evidence = {"mean": pred.mean, "low": pred.low, "high": pred.high, "optimistic": optimistic}
    return _verdict(PREDICTED_WORSE, reason, c.epoch, best=c.best, at=c.budget, epochs=c.epoch, **evidence)
