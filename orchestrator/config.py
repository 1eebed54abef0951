"""Validation of a composed config (the schemas are orchestrator/schema.py, the metric contract
orchestrator/contract.py).

Hydra composes YAML from ``conf/``; :func:`load_config` turns the composed mapping into a
frozen :class:`SweepConfig`, checking every key and value before anything starts. Each
problem is one :class:`ConfigError` line that names the dotted key and the bad value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from orchestrator.contract import OBJECTIVES, WARM_START, mode_of
from orchestrator.errors import ConfigError
from orchestrator.history import check as check_history
from orchestrator.objectives import apply_objectives
from orchestrator.policy import SettingError
from orchestrator.redact import is_secret_key
from orchestrator.scheduler_schemas import SCHEDULER_SCHEMAS, SchedulerConfig
from orchestrator.schema import SweepConfig
from orchestrator.target import split_target
from trainables.data import DATASETS, DataError, check_classes
from trainables.hparams import MODELS

SEARCH_ALGORITHMS = ("tpe", "random", "cmaes", "grid", "nsga2")
SCHEDULERS = tuple(SCHEDULER_SCHEMAS)
CLUSTER_MODES = ("local", "ray")


def shown(key: str, value: Any) -> str:
    """``repr(value)`` for an error message, ``'***'`` when ``key`` looks like a secret."""
    return "'***'" if is_secret_key(key) and value is not None else repr(value)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted."""
    if tp == SchedulerConfig:
        return _build_scheduler(value, key)
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {shown(key, value)}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {shown(key, value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {shown(key, value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {shown(key, value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {shown(key, value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {shown(key, value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: must be a non-empty string, got {shown(key, value)}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {key}")  # a bug in the schema


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    where = prefix or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping, got {shown(where, data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{full}: unknown key (known here: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in data:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(data[name], hints[name], full)
    return cls(**kwargs)


def _build_scheduler(data: Any, key: str) -> SchedulerConfig:
    """``scheduler.*`` built with the schema its ``name`` chooses (default: convergence); a value
    the schema refuses is one ConfigError naming its key."""
    name = data.get("name", "convergence") if isinstance(data, dict) else "convergence"
    _choose(f"{key}.name", name, SCHEDULERS)
    try:
        built = _build(SCHEDULER_SCHEMAS[name], data, key)
    except SettingError as exc:
        raise ConfigError(f"{key}.{exc}") from None
    return built


def _choose(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{key}: must be one of {', '.join(options)}, got {shown(key, value)}")


def known_keys(path: str) -> list[str] | None:
    """The keys the schema accepts under dotted ``path`` ("" for the top); None when not known."""
    if path == "trainable.hparams":
        from trainables.hparams import DOMAINS

        return list(DOMAINS)
    if path == "scheduler":  # one schema per scheduler name: the keys of any
        names = [f.name for schema in SCHEDULER_SCHEMAS.values() for f in dataclasses.fields(schema)]
        return list(dict.fromkeys(["name", *names]))
    if path == "scheduler.thresholds":
        from analysis.convergence import Thresholds

        return [f.name for f in dataclasses.fields(Thresholds)]
    cls: Any = SweepConfig
    for part in path.split(".") if path else []:
        hint = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if not dataclasses.is_dataclass(hint):
            return None
        cls = hint
    return [f.name for f in dataclasses.fields(cls)]


def _at_least(key: str, value: float | None, low: float, *, strict: bool = False) -> None:
    if value is None:
        return
    if value < low or (strict and value == low):
        raise ConfigError(f"{key}: must be {'>' if strict else '>='} {low:g}, got {value!r}")


def _check_name(name: str) -> None:
    """A sweep name names a directory (``<storage.path>/<name>_<time>``) and an MLflow experiment:
    one path component of 1-100 printable characters, at most 200 bytes in UTF-8 (a directory
    name holds 255, the time and a suffix need the rest), without ``/``, ``\\`` or ``:``, not
    starting with ``.`` or a space (no ``..``, nothing hidden, nothing outside storage.path).

    Bytes that are not UTF-8 on the command line reach Python as lone surrogates (PEP 383),
    which are not printable: such a name is refused, and shown escaped (``'\\udcff'``), cut to
    60 characters when longer.
    """
    ok = 0 < len(name) <= 100 and name.isprintable() and not name.startswith((".", " "))
    if not ok or any(c in name for c in "/\\:") or len(name.encode("utf-8", "surrogatepass")) > 200:
        seen = repr(name) if len(name) <= 60 else f"{name[:60]!r}... ({len(name)} characters)"
        raise ConfigError(
            "name: must be one path component: 1-100 printable characters (200 bytes in UTF-8) without "
            f"'/', '\\' or ':', not starting with '.' or a space (it names the results directory), got {seen}"
        )


def _objective(cfg: SweepConfig) -> SweepConfig:
    """Check ``metric`` and ``mode``; a missing mode comes from the metric's name.

    A built-in trainable optimises one of :data:`OBJECTIVES` in its direction; a user's
    function any metric it reports, in the direction ``mode`` says (or its name).
    """
    if cfg.mode is not None:
        _choose("mode", cfg.mode, ("min", "max"))
    named = mode_of(cfg.metric)
    if not cfg.trainable.own:
        _choose("metric", cfg.metric, tuple(OBJECTIVES))
        named = OBJECTIVES[cfg.metric]
        if cfg.mode is not None and cfg.mode != named:
            raise ConfigError(f"mode: {cfg.metric} is better when {named}, got {cfg.mode!r}")
    if cfg.mode is None:
        if named is None:
            raise ConfigError(
                f"mode: required for metric {cfg.metric!r} (max or min): "
                "its name does not say which is better"
            )
        return dataclasses.replace(cfg, mode=named)
    return cfg


def _check_trainable(t: Any) -> None:
    """The trainable's own keys: a built-in model's dataset and data, or the user's function."""
    _at_least("trainable.epochs", t.epochs, 1)
    _at_least("trainable.checkpoint_every", t.checkpoint_every, 1)
    if t.own:
        if t.fn is None:
            raise ConfigError(
                "trainable.fn: required with trainable=function (module:function, e.g. mypkg.train:train)"
            )
        split_target(t.fn, "trainable.fn")
        if t.model_fn is not None:
            split_target(t.model_fn, "trainable.model_fn")
    else:
        for key in ("fn", "model_fn"):
            if getattr(t, key) is not None:
                raise ConfigError(
                    f"trainable.{key}: only with trainable=function (trainable.model is {t.model!r})"
                )
        _choose("trainable.dataset", t.dataset, DATASETS)
    if not 0.0 < t.data.val_fraction < 1.0:
        raise ConfigError(f"trainable.data.val_fraction: must be in (0, 1), got {t.data.val_fraction!r}")
    _at_least("trainable.data.max_samples", t.data.max_samples, 10)
    if t.data.classes is not None:
        if t.own:
            raise ConfigError(
                "trainable.data.classes: only for the built-in models (a function brings its data)"
            )
        try:
            check_classes(t.dataset, t.data.classes)
        except DataError as exc:
            raise ConfigError(f"trainable.{exc}") from None
    _at_least("trainable.metrics.scale", t.metrics.scale, 0, strict=True)


def _check_warm_start(cfg: SweepConfig) -> None:
    """``trainable.hparams.warm_start`` (true: warm, false: cold) needs ``trainable.init_from``,
    and takes only true and false, fixed or as a choice."""
    space, key = cfg.space, f"trainable.hparams.{WARM_START}"
    if WARM_START not in space.fixed and WARM_START not in space.searched:
        return
    if cfg.trainable.init_from is None:
        raise ConfigError(f"{key}: needs trainable.init_from (the weights a warm trial starts from)")
    dist = space.searched.get(WARM_START)
    values = dist.values if dist is not None else [space.fixed[WARM_START]]
    if (dist is not None and dist.type != "choice") or not all(isinstance(v, bool) for v in values):
        raise ConfigError(f"{key}: true or false, or {{type: choice, values: [true, false]}}")


def validate(cfg: SweepConfig) -> SweepConfig:
    """Check the values of a built config against each other and their ranges."""
    _check_name(cfg.name)
    _at_least("num_samples", cfg.num_samples, 1)
    _at_least("max_concurrent_trials", cfg.max_concurrent_trials, 1)
    _at_least("seed", cfg.seed, 0)
    _choose("trainable.model", cfg.trainable.model, (*MODELS, "function"))
    _choose("search.algorithm", cfg.search.algorithm, SEARCH_ALGORITHMS)
    cfg = _objective(apply_objectives(cfg))
    _check_trainable(cfg.trainable)
    space = cfg.space  # validates every hyperparameter and distribution
    if "epochs" in space.fixed:
        raise ConfigError("trainable.hparams.epochs: set the budget with trainable.epochs")
    s = cfg.search
    _choose("search.algorithm", s.algorithm, SEARCH_ALGORITHMS)
    _at_least("search.n_startup_trials", s.n_startup_trials, 1)
    _at_least("search.grid_points", s.grid_points, 1)
    _at_least("search.cmaes_popsize", s.cmaes_popsize, 2)
    if not space.searched:
        raise ConfigError("trainable.hparams: nothing to search (no hyperparameter has a distribution)")
    _check_warm_start(cfg)
    check_history(cfg)  # search.continue_from and search.enqueue, as far as known without a store
    # scheduler.*: checked as it is built (_build_scheduler)
    _choose("cluster.mode", cfg.cluster.mode, CLUSTER_MODES)
    _at_least("cluster.num_cpus", cfg.cluster.num_cpus, 1)
    _at_least("cluster.num_gpus", cfg.cluster.num_gpus, 0)
    _at_least("cluster.connect_timeout_s", cfg.cluster.connect_timeout_s, 0, strict=True)
    if cfg.cluster.mode == "ray" and (cfg.cluster.num_cpus is not None or cfg.cluster.num_gpus is not None):
        raise ConfigError("cluster.num_cpus/num_gpus: only for cluster=local (a joined cluster has its own)")
    r = cfg.resources
    _at_least("resources.cpus_per_trial", r.cpus_per_trial, 0)
    _at_least("resources.gpus_per_trial", r.gpus_per_trial, 0)
    if r.cpus_per_trial == 0 and r.gpus_per_trial == 0:
        raise ConfigError("resources: a trial needs cpus_per_trial > 0 or gpus_per_trial > 0")
    if r.gpus_per_trial > 1 and not r.gpus_per_trial.is_integer():
        raise ConfigError(
            f"resources.gpus_per_trial: above 1 it must be a whole number, got {r.gpus_per_trial!r}"
        )
    _at_least("failure.max_failures", cfg.failure.max_failures, -1)
    _at_least("verbose", cfg.verbose, 0)
    return cfg


def load_config(data: dict[str, Any]) -> SweepConfig:
    """Build and validate a :class:`SweepConfig` from a plain (resolved) mapping."""
    return validate(_build(SweepConfig, data, ""))


__all__ = ["SweepConfig", "known_keys", "load_config", "validate"]
