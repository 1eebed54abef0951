"""What groups a sweep's trials in the report's factor tables (pure: numpy and stdlib).

A factor is ``(title, key, label)``: ``key(params)`` is a trial's group (None leaves the trial
out of the table), ``label(group)`` prints it. The **named factors** (:data:`FACTORS`) read the
built-in model's hyperparameters: ``optimizer``, ``lr`` by decade, ``hidden_layers`` as depth,
``activation``, ``init``, ``l1`` / ``weight_decay`` / ``dropout`` as one regularization, and
``batch_size``. Every other hyperparameter is a **free factor** (:func:`free_factors`), grouped

- by value when its values are not all finite numbers (strings, booleans, lists, a mix), or
  are numbers with at most :data:`BINS` distinct values, or with at most :data:`MAX_LEVELS`
  distinct values that are integers or repeat (at most one distinct value per two trials);
- else into at most :data:`BINS` quantile bins (:func:`bin_edges`), labelled ``[a, b)`` and
  the last one ``[a, b]``.

A trial without the hyperparameter (or with None for it) goes into a row labelled
:data:`NOT_SET`, listed last, so a free factor's rows add up to the sweep's trials and a
conditional hyperparameter (``momentum`` only for some optimizers) shows how the trials without
it did. A free hyperparameter named like a named factor's title gets " (hyperparameter)" added.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Factor = tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], str]]

#: Free numeric factors with more distinct values than this are binned (unless they repeat).
MAX_LEVELS = 8
#: How many quantile bins a binned free factor gets (fewer when rounded edges coincide).
BINS = 4


class _NotSet:
    """The group of trials that do not set a free hyperparameter (sorted last, printed as below)."""

    def __repr__(self) -> str:
        return "(not set)"

    __str__ = __repr__


NOT_SET = _NotSet()


def _lr_decade(params: dict[str, Any]) -> Any:
    lr = params.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        return None
    return math.floor(math.log10(lr) + 1e-9)


def _regularization(params: dict[str, Any]) -> Any:
    if not any(k in params for k in ("l1", "weight_decay", "dropout")):
        return None
    parts = [
        name
        for name, key in (("L1", "l1"), ("L2", "weight_decay"), ("dropout", "dropout"))
        if isinstance(params.get(key), (int, float)) and params[key] > 0
    ]
    return "+".join(parts) or "none"


def _param(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda params: params.get(name)


#: (table title, the factor's value of a trial's params, how a value is printed)
FACTORS: tuple[Factor, ...] = (
    ("optimizer", _param("optimizer"), str),
    ("learning-rate decade", _lr_decade, lambda e: f"[1e{e}, 1e{e + 1})"),
    ("depth (hidden layers)", _param("hidden_layers"), str),
    ("activation", _param("activation"), str),
    ("initialization", _param("init"), str),
    ("regularization", _regularization, str),
    ("batch size", _param("batch_size"), str),
    # trainable.hparams.warm_start: a study that runs warm and cold trials compares them here
    ("warm start (trainable.init_from)", _param("warm_start"), lambda v: "warm" if v else "cold"),
)

#: The hyperparameters the named factors read: no free factor of their own.
COVERED = frozenset(
    {
        "optimizer",
        "lr",
        "hidden_layers",
        "activation",
        "init",
        "l1",
        "weight_decay",
        "dropout",
        "batch_size",
        "warm_start",
    }
)
#: Not factors: ``seed`` is the attempt's, set again by every restart (the lineage records it),
#: so a Ray trial's config holds its last attempt's seed while MLflow's params hold the first.
NOT_FACTORS = frozenset({"seed"})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _round2(x: float) -> float:
    return float(f"{x:.2g}")


def bin_edges(values: Sequence[float], bins: int = BINS) -> list[float]:
    """Edges ``e0 < e1 < ... < ek`` (k <= ``bins``) of quantile bins of finite numbers.

    ``e0`` is the smallest value and ``ek`` the largest; the inner edges are the quantiles at
    1/bins, 2/bins, ... (numpy's linear interpolation), taken of ``log10`` of the values when all
    are positive and the largest is more than ten times the smallest (so they interpolate
    geometrically), then rounded to two significant digits. An inner edge that rounding makes
    equal to another edge, or puts outside ``(e0, ek)``, is dropped (one bin fewer).
    """
    v = np.asarray(sorted(values), dtype=float)
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"bin_edges needs finite numbers, got {list(values)=}")
    lo, hi = float(v[0]), float(v[-1])
    log = lo > 0 and hi > 10 * lo
    qs = np.quantile(np.log10(v) if log else v, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    inner = sorted({_round2(10**q if log else q) for q in qs.tolist()})
    return [lo, *(e for e in inner if lo < e < hi), hi]


def _num(x: float) -> str:
    return f"{x:.3g}"


def _binned(name: str, edges: list[float]) -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any], str]]:
    inner = edges[1:-1]
    last = len(edges) - 2

    def key(params: dict[str, Any]) -> Any:
        value = params.get(name)
        return NOT_SET if value is None else bisect.bisect_right(inner, value)

    def label(i: Any) -> str:
        if i is NOT_SET:
            return str(NOT_SET)
        return f"[{_num(edges[i])}, {_num(edges[i + 1])}{']' if i == last else ')'}"

    return key, label


def _group_value(value: Any) -> Any:
    """A value as a group key: hashable, and the same for equal values (NaN, lists, dicts)."""
    if value is None:
        return NOT_SET
    if isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, float):
        return str(value)  # nan, inf: one group each, printed as Python prints them
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _by_value(values: list[Any]) -> bool:
    if not all(_is_number(v) for v in values):
        return True
    distinct = len(set(values))
    if distinct <= BINS:
        return True
    if distinct > MAX_LEVELS:
        return False
    return all(isinstance(v, int) for v in values) or 2 * distinct <= len(values)


def free_factor(name: str, values: list[Any], title: str | None = None) -> Factor:
    """The factor of hyperparameter ``name`` whose set (not None) values in the sweep are
    ``values``: by value or binned, as the module docstring says."""
    title = title or name
    if _by_value(values):
        return (
            title,
            lambda params: _group_value(params.get(name)),
            lambda v: str(NOT_SET) if v is NOT_SET else str(v),
        )
    key, label = _binned(name, bin_edges([float(v) for v in values]))
    return title, key, label


def free_factors(params: Sequence[Mapping[str, Any]]) -> list[Factor]:
    """One factor per hyperparameter in ``params`` (one mapping per trial) that no named factor
    reads and that some trial sets, sorted by name. Whether it varied is left to the table."""
    titles = {title for title, _, _ in FACTORS}
    out = []
    for name in sorted({k for p in params for k in p} - COVERED - NOT_FACTORS):
        values = [p[name] for p in params if p.get(name) is not None]
        if values:
            title = f"{name} (hyperparameter)" if name in titles else name
            out.append(free_factor(name, values, title))
    return out
