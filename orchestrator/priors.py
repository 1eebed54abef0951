"""``scheduler.prior``: the prior from earlier sweeps, read from the source it names.

``shipped`` is :data:`SHIPPED` (learned on the project's curve banks; ``python -m
benchmarks.train_prior --out orchestrator/policy/shipped_prior.json`` rebuilds it); a ``.json``
file is a stored prior; a ``.jsonl``/``.jsonl.gz`` file is a curve bank (the format of
``benchmarks/curves/README.md``; its ``val_acc`` and ``val_loss``), learned from when the sweep
starts; ``mlflow:<experiment or sweep>`` learns from the finished sweeps of that MLflow experiment
(or that parent run), each sweep a group: a trial's first attempt gives its first epochs, its
last reported value its final (a trial cut early ends low, as it was judged). A sweep reads its
source once, when it starts; a resumed sweep uses the model it stored then
(:func:`orchestrator.resume.read_prior`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.load import SweepNotFound, load_mlflow, sweep_ids
from analysis.records import SweepRecord
from orchestrator.curvebank import read_records
from orchestrator.errors import ConfigError
from orchestrator.policy.prior import PRIOR_EPOCHS, Curve, PriorModel, train_prior
from orchestrator.policy.settings import PRIOR_MLFLOW, PRIOR_SHIPPED
from orchestrator.tracking.uri import resolve_tracking_uri

SHIPPED = Path(__file__).resolve().parent / "policy" / "shipped_prior.json"
KEY = "scheduler.prior"


def check_prior_source(prior: str | None, launch_dir: str) -> None:
    """Refuse a prior file that is not there, before Ray starts (one ConfigError line)."""
    if prior is None or prior == PRIOR_SHIPPED or prior.startswith(PRIOR_MLFLOW):
        return
    path = os.path.join(launch_dir, os.path.expanduser(prior))
    if not os.path.isfile(path):
        raise ConfigError(f"{KEY}: no such file: {prior!r}")


def load_prior(prior: str | None, *, launch_dir: str, tracking_uri: str | None) -> PriorModel | None:
    """The prior ``prior`` names (None: none); a source that cannot give one is a ConfigError.

    ``tracking_uri`` is ``tracking.uri`` as configured (None: the sweep's default store).
    """
    if prior is None:
        return None
    check_prior_source(prior, launch_dir)
    try:
        if prior == PRIOR_SHIPPED:
            return PriorModel.from_dict(json.loads(SHIPPED.read_text(encoding="utf-8")))
        if prior.startswith(PRIOR_MLFLOW):
            uri = resolve_tracking_uri(tracking_uri, launch_dir)
            return _from_mlflow(prior[len(PRIOR_MLFLOW) :].strip(), uri)
        path = Path(launch_dir, os.path.expanduser(prior))
        if path.name.endswith(".json"):
            return PriorModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
        return train_prior([bank_curves(path)], source=path.name)
    except (OSError, ValueError, KeyError, TypeError, SweepNotFound) as exc:
        raise ConfigError(f"{KEY}: {prior!r} gives no prior: {str(exc).splitlines()[0]}") from None


def bank_curves(path: Path) -> list[Curve]:
    """Every run of a curve bank file as a curve to learn from (``val_acc``, higher is better)."""
    return [_bank_curve(record) for record in read_records(path)]


def _bank_curve(record: Mapping[str, Any]) -> Curve:
    values = [_number(v) for v in record["val_acc"]]
    losses = [_number(v) for v in record.get("val_loss") or [math.nan] * len(values)]
    finite = [v for v in values if math.isfinite(v)]
    final = values[-1] if values and math.isfinite(values[-1]) else (finite[-1] if finite else math.nan)
    first = max(PRIOR_EPOCHS)
    return Curve(dict(record.get("config") or {}), values[:first], [-v for v in losses[:first]], final)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _from_mlflow(name: str, uri: str) -> PriorModel:
    groups = [sweep_curves(load_mlflow(run_id, uri)) for run_id in sweep_ids(name, uri)]
    return train_prior([g for g in groups if g], source=f"mlflow {name}")


def sweep_curves(record: SweepRecord) -> list[Curve]:
    """A finished sweep's trials as curves to learn from: the first attempt's first epochs,
    the trial's last reported value as its final (signed: higher is better)."""
    curves = []
    for trial in record.trials:
        first, final = trial.attempts[0].series, trial.final(record.metric)
        values = [record.sign * v for v in (first.get(record.metric) or [])[: max(PRIOR_EPOCHS)]]
        losses = (first.get("val_loss") or [math.nan] * len(values))[: len(values)]
        if values and final is not None:
            curves.append(Curve(trial.params, values, [-v for v in losses], record.sign * final))
    return curves
