"""The metric contract between a trial and the sweep, in one place (stdlib only).

A trial reports once per epoch (DESIGN.md, metric contract): ``epoch`` (1-based within the
current attempt), the objective (``metric``), the loss series the diagnosis reads
(``val_loss``), and what the framework fills in when it can measure it: ``attempt``,
``seed``, ``lr``, ``grad_norm``, ``dead_frac``. The scheduler adapter checks the first result
of every attempt with :func:`contract_problem` (the first hop: before any decision or record);
optional keys that are missing turn off the rules that need them and are never filled in.

The trial's config carries bookkeeping next to its hyperparameters
(:data:`analysis.records.BOOKKEEPING`, re-exported here); :func:`hyperparameters` strips it
everywhere a config is shown, logged or compared, online and in the offline records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.records import BOOKKEEPING, has_epoch, hyperparameters

#: Keys every built-in trainable reports once per epoch.
METRIC_KEYS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "grad_norm",
    "dead_frac",
    "lr",
    "attempt",
    "seed",
    "params",
)
#: Metrics a built-in trial logs per epoch (:func:`logged_metrics` of its results): the
#: contract minus the step itself, plus the epoch's wall time.
LOGGED_KEYS: tuple[str, ...] = tuple(k for k in METRIC_KEYS if k != "epoch") + ("time_this_iter_s",)
#: Metrics a sweep of a built-in trainable may optimise, with the direction that is better.
OBJECTIVES: dict[str, str] = {"val_acc": "max", "val_loss": "min", "train_loss": "min"}
#: Parts of a metric's name that say which direction is better (checked in this order).
_MIN_WORDS = ("loss", "mse", "mae", "error", "perplexity")
_MAX_WORDS = ("acc",)
_MAX_TOKENS = ("f1", "auc", "r2", "precision", "recall", "iou", "dice")
#: The file a trial's checkpoint directory holds (trainables.train writes it).
CHECKPOINT_FILE = "checkpoint.pt"
#: The hyperparameter that turns a trial's warm start off (``false``: a cold start, for a study
#: that runs both; ``trainable.init_from`` must be set to use it).
WARM_START = "warm_start"


def warm_source(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A trial's warm-start spec: ``run.init_from`` of its config, or None when it has none or
    the trial's :data:`WARM_START` hyperparameter is false (a cold start)."""
    spec = (config.get("run") or {}).get("init_from")
    return spec if spec and config.get(WARM_START, True) is not False else None


__all__ = [
    "BOOKKEEPING",
    "CHECKPOINT_FILE",
    "LOGGED_KEYS",
    "METRIC_KEYS",
    "OBJECTIVES",
    "WARM_START",
    "contract_problem",
    "logged_metrics",
    "mode_of",
    "objectives_problem",
    "hyperparameters",
    "step_of",
    "warm_source",
]


def contract_problem(result: Mapping[str, Any], metric: str, loss: str = "val_loss") -> str | None:
    """The first way ``result`` breaks the contract, as ``<key>: <problem>``; None when it holds.

    The objective ``metric``, the ``loss`` and ``epoch`` must be present and numbers (a
    non-finite number is allowed: it is evidence of divergence, not a broken contract). The
    message names the key and the keys the trial did report.
    """
    for key in dict.fromkeys((metric, loss, "epoch")):
        if key not in result:
            return f"{key}: the trial did not report it (reported: {_reported(result)})"
        value = result[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key}: the trial reported {value!r}, not a number"
    if not has_epoch(result):
        return f"epoch: must be a whole number >= 1 (1-based within the attempt), got {result['epoch']!r}"
    return None


def objectives_problem(result: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """``objectives: <problem>`` for the first of the objective ``keys`` that ``result`` lacks or
    holds as something other than a number (non-finite numbers are allowed, as for the metric)."""
    for key in keys:
        if key not in result:
            return f"objectives: the trial never reported {key!r} (reported: {_reported(result)})"
        value = result[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"objectives: the trial reported {key}={value!r}, not a number"
    return None


def mode_of(metric: str) -> str | None:
    """The better direction its name says: ``min`` when it contains loss, mse, mae, error or
    perplexity; ``max`` when it contains acc or has a part f1, auc, r2, precision, recall, iou
    or dice (parts split at non-alphanumerics); None when the name does not say."""
    name = metric.lower()
    if any(word in name for word in _MIN_WORDS):
        return "min"
    parts = set(re.split(r"[^a-z0-9]+", name))
    if any(word in name for word in _MAX_WORDS) or parts & set(_MAX_TOKENS):
        return "max"
    return None


def logged_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """What MLflow records of a result: every number the trial reported (not ``epoch``, the
    step; not flags such as ``replayed``) and Ray's ``time_this_iter_s``."""
    out = {
        k: float(v)
        for k, v in result.items()
        if isinstance(k, str)
        and k not in _RAY_KEYS
        and k not in _NOT_LOGGED
        and not k.startswith("config/")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }
    seconds = result.get("time_this_iter_s")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        out["time_this_iter_s"] = float(seconds)
    return out


def step_of(result: Mapping[str, Any]) -> int:
    """The result's epoch when it is a whole number >= 1, else Ray's ``training_iteration``."""
    return int(result["epoch"]) if has_epoch(result) else int(result.get("training_iteration", 0))


def _reported(result: Mapping[str, Any]) -> str:
    """The trial's own keys (Ray's bookkeeping such as ``time_total_s`` left out), sorted."""
    own = sorted(k for k in result if k not in _RAY_KEYS and not k.startswith("config/"))
    return ", ".join(own) if own else "nothing"


#: Keys of a result that are not metrics to record.
_NOT_LOGGED = frozenset({"epoch", "replayed", "warmup_time"})
#: Keys Ray adds to every result (ray.tune.result); not the trial's own.
_RAY_KEYS = frozenset(
    {
        "done",
        "training_iteration",
        "trial_id",
        "date",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "checkpoint_dir_name",
        "config",
        "should_checkpoint",
        "experiment_tag",
        "verdict",
        "verdict_reason",
        "action",
        "decision_reason",
        "decision",
    }
)
