"""Search spaces written in YAML: typed distributions, validated against the trainable's domains.

A space maps each hyperparameter to either a plain value (fixed for every trial) or a
distribution written as a mapping with a ``type``:

- ``{type: loguniform, low, high}``: float, uniform in log space; ``low`` must be > 0.
- ``{type: uniform, low, high, step: null}``: float, uniform (optionally on a grid of ``step``).
- ``{type: int, low, high, step: 1, log: false}``: integer in ``[low, high]``.
- ``{type: choice, values: [...]}``: one of the listed values.

A hyperparameter set to ``null`` is dropped from the space (the trainable's default applies),
so an experiment file can remove what a base space searches. Hydra merges an experiment's
mapping into the base one, so an experiment that changes a distribution's type sets the base's
other keys to null: ``lr: {type: choice, values: [0.01, 0.1], low: null, high: null}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.records import BOOKKEEPING as RESERVED
from orchestrator.errors import ConfigError
from trainables.hparams import DOMAINS, Domain

DIST_TYPES = ("loguniform", "uniform", "int", "choice")
#: A user's hyperparameter name: it is an MLflow param key (``space.<name>`` on the sweep's run,
#: ``<name>`` on each trial's), an Optuna and Ray key and a column of the report.
FREE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,99}")


@dataclass(frozen=True)
class Dist:
    """One searched hyperparameter: its distribution type and parameters."""

    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()

    def grid(self, points: int) -> list[Any]:
        """Values a grid search tries: the choices, or ``points`` evenly spaced values.

        Log distributions are spaced evenly in log space; integer ranges with at most
        ``points`` values are enumerated whole.
        """
        if self.type == "choice":
            return list(self.values)
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} distribution without bounds")
        if self.type == "int":
            count = int(self.high - self.low) // int(self.step or 1) + 1
            if count <= points:
                return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if points == 1:
            return [self.low if self.type != "int" else int(self.low)]
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            vals = [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)]
        else:
            vals = [self.low + (self.high - self.low) * i / (points - 1) for i in range(points)]
        if self.type == "int":
            return sorted({int(round(v)) for v in vals})
        return [float(f"{v:.6g}") for v in vals]

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not one this distribution can draw (None when it is): not one of the
        choices, not a number, outside ``[low, high]``, not whole for an int, off the step grid."""
        if self.type == "choice":
            ok = any(type(v) is type(value) and v == value for v in self.values)
            return None if ok else f"not one of {list(self.values)!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "not a finite number"
        if self.low is None or self.high is None or not self.low <= value <= self.high:
            return f"outside [{self.low:g}, {self.high:g}]"
        if self.type == "int" and not float(value).is_integer():
            return "not a whole number"
        steps = (value - self.low) / self.step if self.step else 0.0
        if not math.isclose(steps, round(steps), abs_tol=1e-9):
            return f"not on the grid of step {self.step:g} from {self.low:g}"
        return None


@dataclass(frozen=True)
class SearchSpace:
    """Fixed values and searched distributions, both keyed by hyperparameter name."""

    fixed: dict[str, Any]
    searched: dict[str, Dist]

    def grid_size(self, points: int) -> int:
        """Number of configurations a full grid over the searched values has."""
        return math.prod(len(d.grid(points)) for d in self.searched.values())


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be finite, got {value!r}")
    return float(value)


def _check_in_domain(name: str, value: Any, key: str, domains: Mapping[str, Domain] | None) -> None:
    if domains is None:
        return
    problem = domains[name].problem(value)
    if problem is not None:
        raise ConfigError(f"{key}: {name} {problem}, got {value!r}")


def parse_dist(
    name: str, spec: dict[str, Any], key: str, domains: Mapping[str, Domain] | None = DOMAINS
) -> Dist:
    """Parse one distribution mapping; every problem names ``key`` and the bad value.

    With ``domains`` None (a user's own train function) any name is taken and only the
    distribution itself is checked.
    """
    dtype = spec.get("type")
    if dtype not in DIST_TYPES:
        raise ConfigError(f"{key}.type: must be one of {', '.join(DIST_TYPES)}, got {dtype!r}")
    allowed = {"type", "values"} if dtype == "choice" else {"type", "low", "high", "step", "log"}
    for extra, value in spec.items():
        if extra not in allowed and value is not None:  # null: a base file's key switched off
            raise ConfigError(f"{key}.{extra}: unknown key for a {dtype} distribution")
    domain = domains[name] if domains is not None else None
    if dtype == "choice":
        values = spec.get("values")
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ConfigError(f"{key}.values: must be a non-empty list, got {values!r}")
        for i, v in enumerate(values):
            _check_in_domain(name, v, f"{key}.values[{i}]", domains)
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{key}.values: must not repeat a value, got {list(values)!r}")
        return Dist("choice", values=tuple(values))
    if domain is not None:
        _check_kind(name, dtype, domain, key)
    for bound in ("low", "high"):
        if bound not in spec:
            raise ConfigError(f"{key}.{bound}: required for a {dtype} distribution")
    low = _number(spec["low"], f"{key}.low")
    high = _number(spec["high"], f"{key}.high")
    if domain is None and dtype == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(
            f"{key}: an int distribution takes whole bounds, got low={spec['low']!r} high={spec['high']!r}"
        )
    log = dtype == "loguniform" or bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{key}.low: must be > 0 for a log scale, got {spec['low']!r}")
    if low >= high:
        raise ConfigError(f"{key}: low must be < high, got low={spec['low']!r} high={spec['high']!r}")
    _check_in_domain(name, low, f"{key}.low", domains)
    _check_in_domain(name, high, f"{key}.high", domains)
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{key}.step")
        if step <= 0:
            raise ConfigError(f"{key}.step: must be > 0, got {spec['step']!r}")
        if log:
            raise ConfigError(f"{key}.step: cannot be combined with a log scale")
        if dtype == "int" and not step.is_integer():
            raise ConfigError(f"{key}.step: must be an integer, got {spec['step']!r}")
    if dtype == "int":
        step = step if step is not None else 1.0
    return Dist(dtype, low=low, high=high, step=step, log=log)


def _check_kind(name: str, dtype: str, domain: Domain, key: str) -> None:
    """A numeric distribution must suit the hyperparameter's kind (int or float)."""
    if domain.kind not in (int, float):
        raise ConfigError(f"{key}.type: {name} takes {domain.kind.__name__} values; use choice")
    if dtype == "int" and domain.kind is not int:
        raise ConfigError(f"{key}.type: {name} is a float; use uniform or loguniform, not int")
    if dtype != "int" and domain.kind is int:
        raise ConfigError(f"{key}.type: {name} is an integer; use int or choice, not {dtype}")


def _check_free_name(name: Any, prefix: str) -> None:
    """A user's hyperparameter name is 1-100 ASCII letters, digits, ``_`` or ``-``, starting with a
    letter or ``_`` (what MLflow takes as a param key on every platform, and reads as one word),
    and not a bookkeeping name of the sweep (``run``, ``attempt``, ``trial_index``...;
    ``epochs`` is refused later, pointing at ``trainable.epochs``)."""
    if not isinstance(name, str) or not FREE_NAME.fullmatch(name):
        text = str(name)
        seen = repr(name) if len(text) <= 60 else f"{text[:60]!r}... ({len(text)} characters)"
        raise ConfigError(
            f"{prefix}: a hyperparameter name must be 1-100 ASCII letters, digits, '_' or '-', "
            f"starting with a letter or '_', got {seen}"
        )
    if name in RESERVED and name != "epochs":
        raise ConfigError(
            f"{prefix}.{name}: reserved for the sweep's bookkeeping; name the hyperparameter otherwise"
        )


def parse_space(
    hparams: dict[str, Any], prefix: str = "trainable.hparams", domains: Mapping[str, Domain] | None = DOMAINS
) -> SearchSpace:
    """Split a ``hparams`` mapping into fixed values and distributions, validating both.

    ``domains`` None takes free-form names (a user's train function), as
    :func:`_check_free_name` allows them.
    """
    fixed: dict[str, Any] = {}
    searched: dict[str, Dist] = {}
    for name, spec in hparams.items():
        key = f"{prefix}.{name}"
        if domains is not None and name not in domains:
            raise ConfigError(f"{key}: unknown hyperparameter (known: {', '.join(domains)})")
        if domains is None:
            _check_free_name(name, prefix)
        if spec is None:
            continue
        if isinstance(spec, dict):
            searched[name] = parse_dist(name, spec, key, domains)
        else:
            _check_in_domain(name, spec, key, domains)
            fixed[name] = spec
    return SearchSpace(fixed=fixed, searched=searched)
