"""The searcher: the configured space as Optuna distributions, driven by OptunaSearch in Ray Tune."""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from orchestrator.config import SweepConfig
from orchestrator.objectives import objectives_of, several
from orchestrator.searcher import IndexedOptunaSearch
from orchestrator.seeding import derive_seed
from orchestrator.space import Dist, SearchSpace

logger = logging.getLogger(__name__)

#: TPE models at most this many of the latest trials (plus the best ones, see
#: :class:`WindowedTPESampler`): its suggest time grows with the trials it sees (~15 ms of CPU
#: at 1,000, ~130 ms at 10,000 over the whole history; ``python -m benchmarks.scale``). None: all.
TPE_WINDOW: int | None = 1000
#: The best complete trials TPE always sees: Optuna's "good" group is the best
#: ``min(ceil(0.1 n), 25)`` trials, so with 25 it is the same as with the whole history.
TPE_KEEP_BEST = 25


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


class _WindowedStudy:
    """A study as :class:`WindowedTPESampler`'s TPE sees it (every other attribute is the study's)."""

    def __init__(self, study: optuna.Study, sampler: WindowedTPESampler) -> None:
        self._study = study
        self._sampler = sampler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Any = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        seen = self._sampler.window_of(self._study, trials)
        return seen if states is None else [t for t in seen if t.state in states]


class WindowedTPESampler(optuna.samplers.TPESampler):
    """TPE whose density estimates see a bounded history, so a suggestion costs about the same
    at trial 10,000 as at trial ``window``.

    Rule: once the study has more than ``window + keep_best`` trials, TPE samples from the
    ``window`` latest trials (by number), the ``keep_best`` best complete trials before them and
    any trial before them that has not finished. The "good" group (the best
    ``min(ceil(0.1 n), 25)`` trials) is then the same as with the whole history; the "bad" group
    is the recent window (TPE's default weights already fade old trials). Up to that size it is
    Optuna's ``TPESampler`` unchanged. The best of the old trials is kept incrementally, so a
    suggestion does not rescan them; the search space is inferred from the whole study.
    """

    def __init__(self, *, window: int = 1000, keep_best: int = TPE_KEEP_BEST, **kwargs: Any) -> None:
        if window < 1 or keep_best < 0:
            raise ValueError(f"window must be >= 1 and keep_best >= 0, got {window=}, {keep_best=}")
        super().__init__(**kwargs)
        self.window = window
        self.keep_best = keep_best
        self._study_key: tuple[int, str] | None = None
        self._cursor = 0  # trials before this position have been considered for the best
        self._best: list[tuple[float, int]] = []  # min-heap of (signed value, position)
        self._unfinished: list[int] = []  # old positions not finished when considered

    def window_of(self, study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """The trials TPE sees, in study order (``trials``: all of the study's, in order)."""
        cut = len(trials) - self.window
        if cut <= self.keep_best:
            return trials
        key = (id(study._storage), study.study_name)
        if key != self._study_key or cut < self._cursor:
            self._study_key, self._cursor, self._best, self._unfinished = key, 0, [], []
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        waiting, self._unfinished = self._unfinished, []
        for position in [*waiting, *range(self._cursor, cut)]:
            self._consider(trials[position], position, sign)
        self._cursor = cut
        old = sorted({position for _, position in self._best} | set(self._unfinished))
        return [trials[p] for p in old] + trials[cut:]

    def _consider(self, trial: FrozenTrial, position: int, sign: float) -> None:
        if not trial.state.is_finished():
            self._unfinished.append(position)
        elif trial.state == TrialState.COMPLETE and trial.values:
            item = (sign * trial.values[0], position)
            if len(self._best) < self.keep_best:
                heapq.heappush(self._best, item)
            elif self.keep_best:
                heapq.heappushpop(self._best, item)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(_WindowedStudy(study, self), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return super().sample_independent(_WindowedStudy(study, self), trial, param_name, param_distribution)


def make_sampler(cfg: SweepConfig, history: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``search.algorithm``, seeded with the sweep seed; with a ``history``
    of trials copied from an earlier sweep, with a seed derived from both (the sweep seed alone
    would draw the earlier sweep's random proposals again).

    TPE models a bounded history (:data:`TPE_WINDOW`, :class:`WindowedTPESampler`), except with
    several objectives (Optuna's multi-objective TPE over the whole history); ``nsga2`` is
    Optuna's NSGA-II.
    """
    s = cfg.search
    if history:
        cfg = dataclasses.replace(cfg, seed=derive_seed(cfg.seed, "history", history))
    if s.algorithm == "nsga2":
        return _PicklableNSGAII(seed=cfg.seed)
    if s.algorithm == "tpe":
        settings = dict(seed=cfg.seed, n_startup_trials=s.n_startup_trials, multivariate=s.multivariate)
        if TPE_WINDOW is None or several(cfg):
            return optuna.samplers.TPESampler(**settings, constant_liar=True)
        return WindowedTPESampler(window=TPE_WINDOW, **settings, constant_liar=True)
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
        return _RayGridSampler(grid, seed=cfg.seed)
    raise ValueError(f"search.algorithm: unknown {s.algorithm!r}")  # validated in config


class _PicklableNSGAII(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II that Ray can pickle with the searcher (Optuna 5's genetic samplers hold a
    ``threading.Lock``, which is left out of the pickle and made anew)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_thread_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


class _RayGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its stop of ``Study.optimize`` once the grid is covered.

    Ray Tune drives the study and :func:`num_trials` caps the trials at the grid's size; since
    Optuna 5.1 ``Study.stop`` raises outside ``optimize``, so telling the last trial's outcome
    failed with a warning.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def num_trials(cfg: SweepConfig) -> int:
    """Trials to run: ``num_samples``, capped at the grid size for a grid search."""
    if cfg.search.algorithm != "grid":
        return cfg.num_samples
    size = cfg.space.grid_size(cfg.search.grid_points)
    if cfg.num_samples > size:
        logger.info("grid search: %d combinations, running %d trials, not %d", size, size, cfg.num_samples)
    return min(cfg.num_samples, size)


def build_searcher(
    cfg: SweepConfig, storage: Any = None, study_name: str | None = None, *, history: int = 0
) -> OptunaSearch:
    """OptunaSearch over the configured space with the configured sampler, metric and mode (the
    lists of metrics and modes with several objectives: a study with ``directions``).

    Its study is ``study_name`` (default: the sweep name) in ``storage`` (an Optuna storage,
    :func:`orchestrator.study.open_storage`; None: in memory), loaded when it exists: the
    sampler then models the trials already there (a continued sweep's ``history`` of copied
    trials, a resumed sweep's own).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid_points = cfg.search.grid_points if cfg.search.algorithm == "grid" else None
    objectives = objectives_of(cfg)
    return IndexedOptunaSearch(
        space=optuna_space(cfg.space, grid_points=grid_points),
        metric=[o.metric for o in objectives] if objectives else cfg.metric,
        mode=[o.mode for o in objectives] if objectives else cfg.mode,
        sampler=make_sampler(cfg, history),
        study_name=study_name or cfg.name,
        storage=storage,
    )
