"""A prior from earlier sweeps: a trial's chance of finishing near the top, from its first epochs.

Before a sweep has its own evidence (how well its early ranks held, :mod:`.evidence`), a rung
can only compare raw early values; earlier sweeps' curves tell more. :class:`PriorModel` is a
logistic regression per early epoch (1 to 3) over generic features that transfer between
problems: the trial's value and loss ranked among the sweep's values at that epoch, its value
and progress since epoch 1 in units of their spread, and the hyperparameters most models share
(:data:`HYPERPARAMETERS`, under their usual names; a missing one takes a neutral default). It
predicts the chance that the trial's final value is among the top :data:`TOP` share of its
sweep. :func:`train_prior` fits it on finished curves, one group per sweep (each group weighs
the same), so it is cheap to fit on the fly. Values are "higher is better" (signed); a
non-finite value or loss counts as the worst. Pure (numpy and stdlib).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The share of a sweep's finals the prior predicts reaching: its label is "final in the top 10%".
TOP = 0.1
#: The epochs the prior has a model for.
PRIOR_EPOCHS = (1, 2, 3)
#: The format version of a stored prior.
PRIOR_VERSION = 1
#: Z-scores are clipped to this many spreads.
Z_CLIP = 3.0
#: The ridge penalty of the fit (on standardised features, not the intercept).
L2 = 1e-2


def _log(base: float, floor: float) -> Callable[[float], float]:
    return lambda x: math.log(max(x, floor), base)


#: Shared hyperparameters: (names it goes by, transform, value when missing).
HYPERPARAMETERS: tuple[tuple[tuple[str, ...], Callable[[float], float], float], ...] = (
    (("lr", "learning_rate"), _log(10, 1e-8), -3.0),
    (("batch_size",), _log(2, 1.0), 6.0),
    (("width", "max_units", "hidden_size"), _log(2, 1.0), 6.0),
    (("hidden_layers", "num_layers"), float, 2.0),
    (("dropout", "max_dropout"), float, 0.0),
    (("weight_decay",), lambda x: math.log10(max(x, 0.0) + 1e-5), -5.0),
    (("momentum",), float, 0.9),
)
FEATURES = (
    "value_rank",
    "loss_rank",
    "value_z",
    "progress_z",
    "log10_lr",
    "log2_batch_size",
    "log2_width",
    "layers",
    "dropout",
    "log10_weight_decay",
    "momentum",
)


@dataclass(frozen=True)
class Curve:
    """One finished run as the prior learns from it: ``values`` and ``neg_losses`` of its first
    epochs (signed: higher is better), its ``final`` value (signed) and hyperparameters."""

    params: Mapping[str, Any]
    values: Sequence[float]
    neg_losses: Sequence[float]
    final: float


def hyperparameter_features(params: Mapping[str, Any]) -> list[float]:
    """The shared hyperparameters of ``params`` as numbers (:data:`HYPERPARAMETERS`)."""
    out = []
    for names, transform, missing in HYPERPARAMETERS:
        value = next((params[n] for n in names if _number(params.get(n))), None)
        out.append(missing if value is None else float(transform(float(value))))
    return out


@dataclass(frozen=True)
class Reference:
    """The sweep's values and minus-losses at one epoch, sorted ascending (non-finite: ``-inf``),
    with the finite values' median (``centre``) and standard deviation (``spread``)."""

    values: tuple[float, ...]
    neg_losses: tuple[float, ...]
    centre: float
    spread: float

    @classmethod
    def of(cls, values: Sequence[float], neg_losses: Sequence[float]) -> Reference:
        """The reference of these values and minus-losses (any order; NaN counts as the worst)."""
        finite = [v for v in values if math.isfinite(v)]
        centre = float(np.median(finite)) if finite else 0.0
        spread = float(np.std(finite)) if len(finite) > 1 else 0.0
        ordered = tuple(sorted(_worst_if_nan(v) for v in values))
        return cls(ordered, tuple(sorted(_worst_if_nan(v) for v in neg_losses)), centre, spread)


def curve_features(
    values: Sequence[float], neg_losses: Sequence[float], reference: Reference, params: Mapping[str, Any]
) -> list[float]:
    """The features (:data:`FEATURES`) of a trial at epoch ``len(values)`` against the sweep's
    ``reference`` at that epoch (the trial's values included); an empty one ranks it mid-way."""
    value, loss = _worst_if_nan(values[-1]), _worst_if_nan(neg_losses[-1])
    return [
        _rank(value, reference.values),
        _rank(loss, reference.neg_losses),
        _z(value - reference.centre, reference.spread),
        _z(value - _worst_if_nan(values[0]), reference.spread),
        *hyperparameter_features(params),
    ]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _worst_if_nan(value: float) -> float:
    return -math.inf if math.isnan(value) else float(value)


def _rank(value: float, ordered: Sequence[float]) -> float:
    """The midrank share of ``ordered`` (sorted ascending) below ``value`` (0.5 when empty)."""
    if not ordered:
        return 0.5
    low, high = bisect.bisect_left(ordered, value), bisect.bisect_right(ordered, value)
    return (low + high) / 2 / len(ordered)


def _z(difference: float, spread: float) -> float:
    if spread <= 0.0 or math.isnan(difference):
        return 0.0
    return min(max(difference / spread, -Z_CLIP), Z_CLIP)


def examples(group: Sequence[Curve], epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows and labels of one sweep's curves at ``epoch``: the reference is the group's
    values at that epoch; the label is "final in the group's top :data:`TOP` share"."""
    usable = [c for c in group if len(c.values) >= epoch and len(c.neg_losses) >= epoch]
    reference = Reference.of([c.values[epoch - 1] for c in usable], [c.neg_losses[epoch - 1] for c in usable])
    finals = np.array([_worst_if_nan(c.final) for c in usable])
    cut = np.quantile(finals, 1.0 - TOP) if len(finals) else 0.0
    rows = [curve_features(c.values[:epoch], c.neg_losses[:epoch], reference, c.params) for c in usable]
    return np.array(rows, dtype=float).reshape(-1, len(FEATURES)), (finals >= cut).astype(float)


@dataclass(frozen=True)
class PriorModel:
    """Per epoch, the logistic regression's ``mean``/``scale`` (standardisation) and ``coef``
    (intercept first); ``source`` says what it learned from."""

    epochs: dict[int, dict[str, list[float]]]
    source: str = ""
    top: float = TOP
    features: tuple[str, ...] = field(default=FEATURES)

    def chance(self, epoch: int, features: Sequence[float]) -> float | None:
        """P(final in the top ``top`` share) at ``epoch``; None when there is no model for it."""
        model = self.epochs.get(epoch)
        if model is None:
            return None
        x = (np.asarray(features, dtype=float) - model["mean"]) / model["scale"]
        return _sigmoid(model["coef"][0] + float(np.dot(model["coef"][1:], x)))

    def to_dict(self) -> dict[str, Any]:
        """The model as plain JSON-ready data with its version."""
        epochs = {str(e): m for e, m in sorted(self.epochs.items())}
        return {"version": PRIOR_VERSION, "source": self.source, "top": self.top,
                "features": list(self.features), "epochs": epochs}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorModel:
        """Read :meth:`to_dict`'s data; a ValueError names what does not fit."""
        if data.get("version") != PRIOR_VERSION:
            raise ValueError(f"prior version must be {PRIOR_VERSION}, got {data.get('version')!r}")
        if tuple(data.get("features", ())) != FEATURES:
            raise ValueError(f"prior features must be {list(FEATURES)}, got {data.get('features')!r}")
        epochs = {}
        for epoch, model in dict(data["epochs"]).items():
            parts = {k: [float(v) for v in model[k]] for k in ("mean", "scale", "coef")}
            if len(parts["coef"]) != len(FEATURES) + 1 or len(parts["mean"]) != len(FEATURES):
                raise ValueError(f"prior epoch {epoch}: expected {len(FEATURES)} features")
            epochs[int(epoch)] = parts
        return cls(epochs=epochs, source=str(data.get("source", "")), top=float(data.get("top", TOP)))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = L2) -> np.ndarray:
    """Weighted ridge logistic regression by Newton's method; intercept first, not penalised."""
    design = np.c_[np.ones(len(x)), x]
    coef = np.zeros(design.shape[1])
    penalty = l2 * np.diag(np.r_[0.0, np.ones(design.shape[1] - 1)])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ coef, -30, 30)))
        gradient = design.T @ (weight * (p - y)) + penalty @ coef
        hessian = (design * (weight * p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        coef -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return coef


def train_prior(groups: Sequence[Sequence[Curve]], source: str = "") -> PriorModel:
    """Fit the prior on ``groups`` of finished curves (one per sweep; each weighs the same).

    Raises:
        ValueError: no group has curves reaching the prior's epochs with both labels.
    """
    epochs = {}
    for epoch in PRIOR_EPOCHS:
        parts = [examples(g, epoch) for g in groups]
        parts = [(x, y) for x, y in parts if len(y)]
        if not parts or not any(0 < y.sum() < len(y) for _, y in parts):
            continue
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        weight = np.concatenate([np.full(len(p[1]), 1.0 / len(p[1])) for p in parts])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0.0] = 1.0
        coef = fit_logistic((x - mean) / scale, y, weight / weight.mean())
        epochs[epoch] = {"mean": mean.tolist(), "scale": scale.tolist(), "coef": coef.tolist()}
    if not epochs:
        raise ValueError("no curves to learn a prior from (each sweep needs finished trials of both kinds)")
    return PriorModel(epochs=epochs, source=source)
