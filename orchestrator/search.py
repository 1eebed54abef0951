"""The searcher: the configured space as Optuna distributions, driven by OptunaSearch in Ray Tune."""

from __future__ import annotations

import logging

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
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
    """OptunaSearch that adds ``trial_index`` (Optuna's trial number) to each suggestion.

    Trials then have a stable index (0, 1, 2, ...) from which their seeds derive, so the
    same sweep seed gives the same trial seeds from run to run.
    """

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is not None:
            params["trial_index"] = self._ot_trials[trial_id].number
        return params


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
