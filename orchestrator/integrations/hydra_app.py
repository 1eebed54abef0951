"""Hydra app adapter: tune a Hydra application's task function (the lightning-hydra-template's
``src/train.py: train(cfg)``) without changing its code.

``trainable.fn`` names :func:`train` with the app's task and config (``_partial_: true``)::

    trainable:
      fn:
        _target_: orchestrator.integrations.hydra_app.train
        _partial_: true
        task: src.train:train           # module:function taking the composed cfg
        config_dir: configs             # relative to the launch directory, or absolute
        config_name: train.yaml
        params: {lr: model.optimizer.lr}  # hp name -> the app's config key (default: the name)
        metrics: {val_acc: val/acc}     # reported name -> logged name (default: every scalar)

Rules:

- The app's config is composed with Hydra's compose API from ``config_dir`` with these overrides,
  in order: ``overrides``; each hyperparameter as ``++<key>=<value>`` (a key naming a config group
  of the app, a directory under ``config_dir``, as ``<key>=<value>``: the option is chosen);
  ``++seed=<trial.seed>`` (a constant seed of the app would make restarts pointless);
  ``++trainer.max_epochs=<trial.epochs>``; ``++ckpt_path=`` this attempt's Lightning checkpoint or
  null (:func:`~orchestrator.integrations.lightning.resume_path`, called once here); and
  ``++callbacks.convergence`` as a :class:`~orchestrator.integrations.lightning.ConvergenceCallback`
  (with ``metrics``), which the app instantiates with its other callbacks.
- Values are written so that Hydra reads them back as the same type: floats as ``repr`` (the
  exponent without leading zeros), strings always quoted, booleans ``true``/``false``, None
  ``null``, lists and dicts element-wise.
- A relative ``config_dir`` is read from the launch directory (a Ray trial's original working
  directory, ``TUNE_ORIG_WORKING_DIR``; else the current one).
- The task runs as under ``@hydra.main``: its module imported first (it may set environment
  variables its config reads), ``HydraConfig`` set (``${hydra:runtime.output_dir}`` is the app's
  ``hydra.run.dir``, created, relative to the current directory: a Ray trial's own) and the
  config without its ``hydra`` node. Hydra's global state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from orchestrator.integrations.lightning import resume_path
from orchestrator.target import load_target
from orchestrator.trial import Trial

#: The ``_target_`` that names this adapter in ``trainable.fn``.
TARGET = "orchestrator.integrations.hydra_app.train"
#: The callback the app is given to instantiate.
CALLBACK = "orchestrator.integrations.lightning.ConvergenceCallback"

_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*")


def train(
    hp: Mapping[str, Any],
    trial: Trial,
    *,
    task: str,
    config_dir: str,
    config_name: str,
    params: Mapping[str, str] | None = None,
    metrics: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> Any:
    """Compose the app's config for this trial and call ``task(cfg)``; return what it returns."""
    launch_dir = os.environ.get("TUNE_ORIG_WORKING_DIR") or os.getcwd()
    directory = os.path.abspath(os.path.join(launch_dir, os.path.expanduser(config_dir)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"trainable.fn.config_dir: no directory {directory}")
    task_fn = load_target(task, launch_dir)
    ckpt_path = resume_path(trial)
    trial_overrides = [
        *overrides,
        *hp_overrides(hp, params or {}, directory),
        f"++seed={trial.seed}",
        f"++trainer.max_epochs={trial.epochs}",
        f"++ckpt_path={format_value(ckpt_path)}",
        *callback_overrides(metrics),
    ]
    cfg = compose_app(directory, config_name, trial_overrides)
    with hydra_config(cfg) as task_cfg:
        return task_fn(task_cfg)


def hp_overrides(hp: Mapping[str, Any], params: Mapping[str, str], config_dir: str) -> list[str]:
    """One override per hyperparameter: ``++<key>=<value>``, or ``<key>=<value>`` when ``key``
    is a config group of the app (a directory under ``config_dir``).

    Raises:
        ValueError: a key that is no dotted config path.
    """
    out = []
    for name, value in hp.items():
        key = params.get(name, name)
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"trainable.fn.params: {name!r} maps to {key!r}, not a dotted config key")
        group = os.path.isdir(os.path.join(config_dir, *key.split(".")))
        out.append(f"{'' if group else '++'}{key}={format_value(value)}")
    return out


def callback_overrides(metrics: Mapping[str, str] | None) -> list[str]:
    """The overrides that add the ConvergenceCallback to the app's ``callbacks`` (with ``metrics``).

    Raises:
        ValueError: a reported name that cannot be a config key.
    """
    out = [f"++callbacks.convergence._target_={CALLBACK}"]
    for reported, logged in (metrics or {}).items():
        if not isinstance(reported, str) or not re.fullmatch(r"[A-Za-z_]\w*", reported):
            raise ValueError(f"trainable.fn.metrics: reported name {reported!r} must be an identifier")
        out.append(f"++callbacks.convergence.metrics.{reported}={format_value(str(logged))}")
    return out


def format_value(value: Any) -> str:
    """``value`` as an override's value that Hydra parses back to an equal value of its type."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # a numpy or torch scalar
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"hydra_app: cannot write {value!r} ({type(value).__name__}) as an override")


def _float(value: float) -> str:
    """A float Hydra reads back equal: ``repr``, with its exponent's leading zeros dropped."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    mantissa, sep, exponent = text.partition("e")
    if not sep:
        return text
    sign = exponent[0] if exponent[0] in "+-" else ""
    return f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"


def compose_app(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    """The app's config (with its ``hydra`` node) composed from the absolute ``config_dir``;
    Hydra's global state is what it was afterwards.

    Raises:
        ValueError: composing failed (a missing config, an override that does not apply).
    """
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"hydra_app: composing {config_name} in {config_dir} failed: {detail}") from None
    finally:
        restore_gh_from_backup(backup)


@contextlib.contextmanager
def hydra_config(cfg: DictConfig) -> Iterator[DictConfig]:
    """Set ``HydraConfig`` from ``cfg`` as ``@hydra.main`` does (the output directory resolved
    from ``hydra.run.dir`` and created) and yield the task's config, without ``hydra``; the
    previous ``HydraConfig`` is back afterwards."""
    saved = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(cfg)
        output_dir = os.path.abspath(str(OmegaConf.select(cfg, "hydra.run.dir")))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(cfg)
        os.makedirs(output_dir, exist_ok=True)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        yield task_cfg
    finally:
        HydraConfig.instance().cfg = saved
