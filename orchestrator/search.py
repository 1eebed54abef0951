"""The searcher: the configured space as Optuna distributions, driven by OptunaSearch in Ray Tune."""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from orchestrator.config import SweepConfig
from orchestrator.space import Dist, SearchSpace

logger = logging.getLogger(__name__)


def to_optuna(dist: Dist) -> BaseDistribution:
    """The Optuna distribution for one parsed :class:`Dist`."""
    if dist.type == "choice":
        return CategoricalDistribution(list(dist.values))
    low, high = dist.low, dist.high
    if dist.type == "int":
        return IntDistribution(int(low), int(high), log=dist.log, step=int(dist.step or 1))
    return FloatDistribution(low, high, log=dist.log, step=dist.step)


def optuna_space(space: SearchSpace, *, grid_points: int | None = None) -> dict[str, BaseDistribution]:
    """Optuna distributions of the searched hyperparameters.

    With ``grid_points`` each becomes a categorical over its grid values (what GridSampler
    enumerates); otherwise each keeps its own type and bounds.
    """
    if grid_points is not None:
        return {n: CategoricalDistribution(d.grid(grid_points)) for n, d in space.searched.items()}
    return {name: to_optuna(d) for name, d in space.searched.items()}


def make_sampler(cfg: SweepConfig) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``search.algorithm``, seeded with the sweep seed."""
    s = cfg.search
    if s.algorithm == "tpe":
        return optuna.samplers.TPESampler(
            seed=cfg.seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            constant_liar=True,
        )
    if s.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if s.algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=cfg.seed,
            n_startup_trials=s.n_startup_trials,
            popsize=s.cmaes_popsize,
            independent_sampler=optuna.samplers.RandomSampler(seed=cfg.seed),
            warn_independent_sampling=False,
        )
    if s.algorithm == "grid":
        grid = {name: d.grid(s.grid_points) for name, d in cfg.space.searched.items()}
        return optuna.samplers.GridSampler(grid, seed=cfg.seed)
    raise ValueError(f"search.algorithm: unknown {s.algorithm!r}")  # validated in config


def num_trials(cfg: SweepConfig) -> int:
    """Trials to run: ``num_samples``, capped at the grid size for a grid search."""
    if cfg.search.algorithm != "grid":
        return cfg.num_samples
    size = cfg.space.grid_size(cfg.search.grid_points)
    if cfg.num_samples > size:
        logger.info("grid search: %d combinations, running %d trials, not %d", size, size, cfg.num_samples)
    return min(cfg.num_samples, size)


class IndexedOptunaSearch(OptunaSearch):
    """OptunaSearch that numbers trials and lets a scheduler say how each one really ended.

    - Each suggestion gets ``trial_index`` (Optuna's trial number), from which trial seeds
      derive, so the same sweep seed gives the same trial seeds from run to run.
    - :meth:`record_outcome` sets the state Optuna is told when the trial completes
      (COMPLETE with its value, PRUNED, or FAIL) instead of Ray's "stopped means COMPLETE".
    - :meth:`supersede` handles a restart that changed hyperparameters: the original Optuna
      trial is told PRUNED, and the final value is credited to the new values (as a trial of
      its own) when they lie inside the search space.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outcomes: dict[str, tuple[str, float | None, dict[str, Any]]] = {}
        self._superseded: dict[str, dict[str, Any]] = {}

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is not None:
            params["trial_index"] = self._ot_trials[trial_id].number
        return params

    def record_outcome(self, trial_id: str, state: str, value: float | None, attrs: dict[str, Any]) -> None:
        """Remember how ``trial_id`` ended; told to Optuna when Ray completes the trial."""
        self._outcomes[trial_id] = (state, value, attrs)

    def supersede(self, trial_id: str, changes: dict[str, Any], reason: str) -> None:
        """Mark the trial's original values as superseded by a remedy that changed ``changes``."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("superseded_by", {k: repr(v) for k, v in changes.items()})
        ot_trial.set_user_attr("reason", reason)
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._superseded[trial_id] = {**ot_trial.params, **changes}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._superseded:
            self._credit_new_values(trial_id, result, error)
            return
        outcome = self._outcomes.pop(trial_id, None)
        if outcome is None or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        state, value, attrs = outcome
        ot_trial = self._ot_trials[trial_id]
        for key, attr in attrs.items():
            ot_trial.set_user_attr(key, attr)
        if state == "COMPLETE" and (value is None or not math.isfinite(value)):
            state = "FAIL"
        try:
            self._ot_study.tell(ot_trial, value if state == "COMPLETE" else None, state=TrialState[state])
        except (ValueError, RuntimeError) as exc:
            logger.warning("could not tell Optuna how trial %s ended: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def _credit_new_values(self, trial_id: str, result: dict | None, error: bool) -> None:
        params = self._superseded.pop(trial_id)
        self._completed_trials.add(trial_id)
        state, value, _ = self._outcomes.pop(trial_id, ("COMPLETE", None, {}))
        if value is None and result:
            value = result.get(self.metric)
        space = self._space
        inside = isinstance(space, dict) and all(
            name in params and space[name]._contains(space[name].to_internal_repr(params[name]))
            for name in space
        )
        if error or state != "COMPLETE" or value is None or not math.isfinite(value) or not inside:
            return
        self._ot_study.add_trial(
            optuna.trial.create_trial(
                params={name: params[name] for name in space},
                distributions=space,
                value=value,
                user_attrs={"remedy_of": trial_id},
            )
        )


def build_searcher(cfg: SweepConfig) -> OptunaSearch:
    """OptunaSearch over the configured space with the configured sampler, metric and mode."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid_points = cfg.search.grid_points if cfg.search.algorithm == "grid" else None
    return IndexedOptunaSearch(
        space=optuna_space(cfg.space, grid_points=grid_points),
        metric=cfg.metric,
        mode=cfg.mode,
        sampler=make_sampler(cfg),
        study_name=cfg.name,
    )
