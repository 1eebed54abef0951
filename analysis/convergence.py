"""Convergence diagnosis of one learning curve: pure functions over plain numbers.

:func:`diagnose` gives an online :class:`Verdict` on the epochs of a running trial so far;
:func:`convergence_epoch` and :func:`extrapolate` serve offline reports with the same rules.
Epochs are 1-based within an attempt. NaN policy: a non-finite loss at the latest epoch is a
divergence; any other non-finite value (an earlier loss, a metric, grad norm or dead fraction)
counts as "not measured", and a rule needing a window of measurements waits while one is
missing. Defaults are calibrated on ``benchmarks/curves`` (tests/test_convergence_bank.py).

The statuses, :class:`Verdict` and :class:`Thresholds` live in :mod:`analysis.verdict`, the fits
in :mod:`analysis.extrapolation`, the plateau test in :mod:`analysis.plateau`; this module composes
the rules and re-exports the public names, so ``from analysis.convergence import X`` keeps working.
"""

from __future__ import annotations

import itertools
import math
import types
from collections.abc import Sequence
from typing import NamedTuple

from analysis.extrapolation import Prediction, extrapolate, optimistic_final, optimistic_forecast
from analysis.plateau import find_plateau, last_window, loss_fall, ls_slope
from analysis.verdict import (
    CONVERGED,
    DEFAULT_THRESHOLDS,
    DIVERGED,
    OSCILLATING,
    PLATEAU_BAD,
    PREDICTED_WORSE,
    PROGRESSING,
    STATUSES,
    STUCK,
    Thresholds,
    Verdict,
    level_origin,
    mode_sign,
    threshold_problem,
)

__all__ = [
    "CONVERGED", "DIVERGED", "STUCK", "OSCILLATING", "PLATEAU_BAD", "PREDICTED_WORSE", "PROGRESSING",
    "STATUSES", "DEFAULT_THRESHOLDS", "Prediction", "Thresholds", "Verdict",
    "convergence_epoch", "diagnose", "extrapolate", "level_origin", "optimistic_final", "threshold_problem",
]  # fmt: skip
_INF, _NAN = math.inf, math.nan


def _verdict(status: str, reason: str, step: int | None, kind: str | None = None, **ev: float) -> Verdict:
    return Verdict(status, reason, step, types.MappingProxyType({k: float(v) for k, v in ev.items()}), kind)


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
    sign = mode_sign(mode)
    if len(curve) < thresholds.min_epochs:
        return None
    found = find_plateau([float(v) for v in curve], sign, thresholds, thresholds.window)
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
    guess: float | None  # the chance level as a uniform guess's probability, in (0, 1)
    scale: float  # the metric's unit
    origin: float  # where the target's level is measured from: 0, or scale for an error rate

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
    scale: float = 1.0,
) -> Verdict:
    """Online: the first rule that fires of diverged, stuck, oscillating, converged, predicted_worse.

    converged turns plateau_bad when ``best`` is given and the plateau is worse by more than
    ``bad_margin``; no rule firing is progressing. The target is ``metric`` (better in direction
    ``mode``) when given, else ``loss`` (lower is better); ``best``, the best final target of the
    other trials, is in target units. Series hold one value per epoch, ``loss[0]`` at epoch
    ``start_epoch``: a caller keeping only a recent window passes ``initial_loss`` (the loss at
    epoch 1; default ``loss[0]``) and ``best_loss`` (the lowest loss before the window); the
    plateau start, "stays lower", the metric's baseline and the extrapolation see only the window.

    ``scale`` is the metric's unit: the thresholds' margins in metric units are multiplied by
    it (:meth:`Thresholds.scaled`), the ideal of a "max" metric is ``scale`` (0 for "min"), and
    a ``chance`` level makes the metric an accuracy ("max") or an error rate ("min") in that
    unit, so a uniform guess has probability ``chance / scale`` or ``1 - chance / scale``
    (its cross-entropy ln(1/p) is a loss reference only for p in (0, 1)). The relative tests
    (the plateau's ``rel_tol``, the oscillation's swing) measure the target's level from 0, or
    from ``scale`` for an error rate (where its accuracy, ``scale - metric``, is 0).

    Raises:
        ValueError: empty ``loss``, series of unequal length, bad ``mode`` or ``start_epoch``.
    """
    sign = mode_sign(mode)
    losses = _as_list("loss", loss, len(loss))
    if not losses or start_epoch < 1:
        raise ValueError(f"loss needs >= 1 epoch and start_epoch >= 1: got {len(loss)=}, {start_epoch=}")
    n, epoch = len(losses), start_epoch + len(losses) - 1
    init = losses[0] if initial_loss is None else float(initial_loss)
    lowest = min(filter(math.isfinite, losses), default=_INF)
    lowest = min(lowest, _INF if best_loss is None else best_loss)
    metrics = _as_list("metric", metric, n)
    grad, dead = _as_list("grad_norm", grad_norm, n), _as_list("dead_frac", dead_frac, n)
    guess = _guess(chance, mode, scale)
    origin = level_origin(mode, chance, scale) if metrics is not None else 0.0
    sign = sign if metrics is not None else 1.0
    series = (losses, metrics, sign, grad, dead, epoch, start_epoch, init, lowest)
    c = _Curves(*series, budget, best, chance, guess, scale, origin)
    th = thresholds.scaled(scale)
    for rule in (_diverged, _stuck, _oscillating, _converged, _predicted_worse):
        if (verdict := rule(c, th)) is not None:
            return verdict
    return _verdict(PROGRESSING, f"progressing at epoch {epoch}", epoch, epochs=epoch)


def _guess(chance: float | None, mode: str, scale: float) -> float | None:
    """A uniform guess's probability: ``chance / scale`` ("max") or ``1 - chance / scale`` ("min");
    None without a chance level or outside (0, 1)."""
    if chance is None:
        return None
    p = chance / scale if mode == "max" else 1.0 - chance / scale
    return p if 0.0 < p < 1.0 else None


def _diverged(c: _Curves, th: Thresholds) -> Verdict | None:
    """Diverged: the latest loss is non-finite, or ``diverge_patience`` epochs above factor x best loss.

    The reference "best loss" is the lowest finite loss so far, or the loss of a uniform guess
    (ln(1/p), p its probability: :func:`diagnose`) when that is lower and the metric has stayed
    within ``chance_margin`` of ``chance`` over those epochs: a run that blew up in its first
    epoch and learns nothing has diverged too (a large loss alone is not enough: overconfident
    runs can score well).
    """
    if not math.isfinite(c.loss[-1]):
        reason, epoch = f"diverged at epoch {c.epoch}: val_loss is {c.loss[-1]}", c.epoch
        return _verdict(DIVERGED, reason, epoch, "nonfinite", epoch=epoch, loss=c.loss[-1], epochs=epoch)
    p, reference = th.diverge_patience, c.lowest
    guessing = c.metric is not None and c.chance is not None and c.guess is not None
    if guessing and all(abs(m - c.chance) <= th.chance_margin for m in c.metric[-p:]):
        reference = min(reference, math.log(1.0 / c.guess))
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
    than ``progress_frac`` below the initial loss (at least ln(1/p), a uniform guess's
    cross-entropy, when ``chance`` gives its probability p) and the metric, if any, never beat its first value
    by more than ``chance_margin``. chance and no_progress wait while the loss still falls by
    ``stuck_trend`` of its level per window or more.
    """
    w, epoch = th.window, c.epoch
    if epoch < th.grace:
        return None
    if (tail := last_window(c.dead, w)) is not None and min(tail) >= th.dead_frac:
        reason = f"stuck: {tail[-1]:.0%} of ReLU units dead after {epoch} epochs"
        return _verdict(STUCK, reason, epoch, "dead_relu", dead_frac=tail[-1], epochs=epoch)
    if (tail := last_window(c.grad, w)) is not None and max(tail) < th.vanishing_grad:
        reason = f"stuck: grad norm {tail[-1]:.2g} below {th.vanishing_grad:g} for {w} epochs"
        return _verdict(STUCK, reason, epoch, "vanishing_grad", grad_norm=tail[-1], epochs=epoch)
    if loss_fall(c.loss, w) >= th.stuck_trend:
        return None
    tail = last_window(c.metric, w)
    if tail is not None and c.chance is not None:
        deviation = max(abs(v - c.chance) for v in tail)
        if deviation <= th.chance_margin:
            reason = f"stuck: metric {tail[-1]:.3g} at chance {c.chance:.3g} ±{deviation:.3f} for {w} epochs"
            evidence = {"chance": c.chance, "metric": tail[-1], "deviation": deviation, "epochs": epoch}
            return _verdict(STUCK, reason, epoch, "chance", **evidence)
    init = max(c.init, -math.log(c.guess)) if c.guess is not None else c.init
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
    with no improving LS trend (the level: |mean - origin|, :func:`diagnose`)."""
    tail = last_window(c.target, 2 * th.window)
    if c.epoch < th.min_epochs or tail is None:
        return None
    level = abs(sum(tail) - c.origin * len(tail)) / len(tail)
    swing = sum(abs(b - a) for a, b in itertools.pairwise(tail)) / (len(tail) - 1) / max(level, 1e-300)
    slope = c.sign * ls_slope(tail)  # > 0: getting worse
    if swing <= th.osc_rel_swing or slope < 0.0:
        return None
    reason = f"oscillating: swings of {swing:.0%} per epoch with no improving trend over {len(tail)} epochs"
    return _verdict(OSCILLATING, reason, c.epoch, swing=swing, slope=slope, epochs=c.epoch)


def _converged(c: _Curves, th: Thresholds) -> Verdict | None:
    """Converged: the target is on a plateau (:func:`_plateau`; trend horizon: the epochs left to the
    budget, at least a window), not at chance level, and with a metric the loss falls < ``loss_trend``
    per window; plateau_bad if worse than ``best`` by > ``bad_margin``."""
    horizon = th.window if c.budget is None else max(th.window, c.budget - c.epoch)
    found = None if c.epoch < th.min_epochs else find_plateau(c.target, c.sign, th, horizon, c.origin)
    if found is None or (c.metric is not None and loss_fall(c.loss, th.window) >= th.loss_trend):
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
    rel = spread / abs(level - c.origin) if level != c.origin else 0.0
    reason = f"converged at epoch {step} (last {th.window} epochs within {rel:.1%} of {level:.4g})"
    return _verdict(CONVERGED, reason, step, **evidence)


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
    units = {"headroom": th.predict_headroom, "scale": c.scale, "origin": c.origin}
    found = optimistic_forecast(c.target, c.budget, mode=mode, start_epoch=c.start_epoch, **units)
    if found is None:
        return None
    pred, optimistic = found
    if sign * (optimistic - c.best) <= th.predict_margin:
        return None
    band = f"{pred.mean:.3g} ± {(pred.high - pred.low) / 2:.2g}"
    reason = f"predicted worse: {band} at epoch {c.budget} vs best {c.best:.3g}"
    evidence = {"mean": pred.mean, "low": pred.low, "high": pred.high, "optimistic": optimistic}
    return _verdict(PREDICTED_WORSE, reason, c.epoch, best=c.best, at=c.budget, epochs=c.epoch, **evidence)
