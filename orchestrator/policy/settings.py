"""``scheduler=convergence``'s settings, each with its one default and allowed values, and the
policy they build.

:class:`ConvergenceSettings` is the one source: ``conf/scheduler/convergence.yaml`` only names
the scheduler and takes every key and default from it (registered with Hydra by
``orchestrator.scheduler_schemas``), ``orchestrator.config`` validates ``scheduler.*`` by
building it, and :func:`policy_from_settings` (used by the product,
``orchestrator.scheduling.build_policy``, and the replay benchmark,
``benchmarks.schedulers.make_convergence``) builds the policy from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from analysis.convergence import Thresholds
from orchestrator.policy.config import PolicyConfig, PolicySettings, SettingError, thresholds_from
from orchestrator.policy.engine import ConvergencePolicy
from orchestrator.policy.prior import PriorModel
from orchestrator.policy.prior_guard import PriorGuard
from orchestrator.policy.rules import GuardedRule, RankRule
from orchestrator.policy.rungs import AshaRungs, CostRungs

#: The rank rules ``inner`` may name.
INNER_RULES = ("asha",)
#: What ``prior`` may name besides a file: the prior shipped with the project, an MLflow sweep.
PRIOR_SHIPPED, PRIOR_MLFLOW = "shipped", "mlflow:"
PRIOR_FILES = (".json", ".jsonl", ".jsonl.gz")


def _default_thresholds() -> dict[str, Any]:
    return dataclasses.asdict(Thresholds())


@dataclass(frozen=True)
class ConvergenceSettings(PolicySettings):
    """Every setting of the convergence scheduler with its default; validated on creation.

    The decision rules' settings are :class:`PolicySettings`'s (their defaults too); the rest
    place the rank rules and the thresholds. A bad value is a :class:`SettingError` naming it.

    Args:
        inner: the rank rule (one of :data:`INNER_RULES`, or None: none): ``asha`` is
            :class:`AshaRungs` at ``grace_period * reduction_factor**k`` epochs, used in sweeps
            of at least ``reduction_factor**2`` trials (in smaller ones a rung's ranking is noise).
        grace_period: the first rung, in epochs (capped at the budget).
        reduction_factor: a rung keeps the top ``1 / reduction_factor`` of the values before it.
        adaptive_rungs: how hard a rung cuts follows how well its ranks held on the sweep's
            own trials (:class:`AshaRungs` ``adaptive``): once 12 trials reached a rung and the
            next, it keeps the top ``1 / reduction_factor**1.5`` where its values ranked the
            next rung's leaders (AUC >= 0.8), the top ``1 / reduction_factor`` where they did
            no better than chance (and before that evidence), in between by the AUC; a cut's
            reason gives the evidence. The loss guard's share stays fixed.
        loss_guard: each rung has a guard over the loss that spares a trial whose loss ranks
            in its top ``1 / reduction_factor**2`` (:class:`GuardedRule`).
        cost_rungs: the same rungs over training time too (:class:`CostRungs`), with their guard.
        cost_calibration: the compute rungs' unit is the median second epoch of this many trials.
        prior: a prior from earlier sweeps (:mod:`orchestrator.policy.prior_guard`): ``shipped``
            (learned on the project's curve banks), ``mlflow:<experiment or sweep>`` (its
            finished trials' curves), a curve bank file (``.jsonl``/``.jsonl.gz``) or a stored
            prior (``.json``); None: no prior. Read once, when the sweep starts: the sweep stores
            it in its directory (``prior.json``) and a resumed sweep uses that.
        prior_cut: until an early rung's own ranks are measured, a trial it keeps is cut when
            the prior gives it less than this chance of finishing in the sweep's top 10% (0: never).
        prior_spare: likewise, a trial it cuts is spared when the prior gives it at least this
            chance (null: never; measured on the replay banks, sparing cost epochs and no gain).
        thresholds: :class:`analysis.convergence.Thresholds` by name; one left out takes its default.
    """

    inner: str | None = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0
    adaptive_rungs: bool = True
    loss_guard: bool = True
    cost_rungs: bool = False
    cost_calibration: int = 4
    prior: str | None = None
    prior_cut: float = 0.02
    prior_spare: float | None = None
    thresholds: dict[str, Any] = field(default_factory=_default_thresholds)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner is not None and self.inner not in INNER_RULES:
            raise SettingError("inner", f"must be one of {', '.join(INNER_RULES)} or null", self.inner)
        if not isinstance(self.adaptive_rungs, bool):
            raise SettingError("adaptive_rungs", "must be true or false", self.adaptive_rungs)
        if self.grace_period < 1:
            raise SettingError("grace_period", "must be >= 1", self.grace_period)
        if not self.reduction_factor > 1:
            raise SettingError("reduction_factor", "must be > 1", self.reduction_factor)
        calibration = self.cost_calibration
        if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1:
            raise SettingError("cost_calibration", "must be a whole number >= 1", calibration)
        check_prior(self.prior)
        if isinstance(self.prior_cut, bool) or not 0.0 <= self.prior_cut < 1.0:
            raise SettingError("prior_cut", "must be in [0, 1)", self.prior_cut)
        spare = self.prior_spare
        if spare is not None and (isinstance(spare, bool) or not self.prior_cut < spare <= 1.0):
            raise SettingError("prior_spare", "must be null or in (prior_cut, 1]", spare)
        thresholds_from(self.thresholds)

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> ConvergenceSettings:
        """The settings in ``settings`` (keys as in the YAML), the defaults for the rest.

        Raises:
            SettingError: an unknown key, or a bad value.
        """
        known = [f.name for f in fields(cls)]
        for name in settings:
            if name not in known:
                raise SettingError(name, f"unknown scheduler setting (known: {', '.join(known)})")
        return cls(**settings)

    def policy_config(self, *, mode: str, chance: float | None, scale: float | None = 1.0) -> PolicyConfig:
        """The policy's config: these settings, the sweep's ``mode``, ``chance`` and ``scale``
        (:class:`PolicyConfig`: the metric's unit; None: measured, "min" only)."""
        chosen = {f.name: getattr(self, f.name) for f in fields(PolicySettings)}
        th = thresholds_from(self.thresholds)
        return PolicyConfig(mode=mode, chance=chance, scale=scale, thresholds=th, **chosen)

    def pause_epochs(self, budget: int) -> list[int]:
        """The epochs where a trial may be paused (the epoch rungs below ``budget`` when ``pause``
        and ``inner`` are on, every epoch below it with ``cost_rungs`` too: a compute rung falls on
        any epoch; none otherwise): a trial checkpoints there, so it resumes where it paused."""
        if not self.pause or self.inner is None:
            return []
        if self.cost_rungs:
            return list(range(1, budget))
        grace = min(self.grace_period, budget)
        return AshaRungs(grace, float(self.reduction_factor), budget).rungs

    def rank_rules(self, *, budget: int, total_epochs: int | None) -> list[RankRule]:
        """The rank rules these settings place for a sweep of ``total_epochs`` (None: unbounded).

        The epoch rungs first, then the compute rungs (``cost_rungs``), each with its loss
        guard when ``loss_guard``; none without ``inner`` or in a sweep of fewer than
        ``reduction_factor**2`` trials (``total_epochs / budget``).
        """
        factor = float(self.reduction_factor)
        if self.inner is None or (total_epochs is not None and total_epochs < factor**2 * budget):
            return []
        grace = min(self.grace_period, budget)
        keep = 1.0 / factor**2 if self.loss_guard else None

        def guarded(make: Callable[..., RankRule], **kw: Any) -> RankRule:
            rule = make(grace, factor, budget, adaptive=self.adaptive_rungs, **kw)
            return rule if keep is None else GuardedRule(rule, make(grace, factor, budget, keep=keep, **kw))

        rules = [guarded(AshaRungs)]
        if self.cost_rungs:
            rules.append(guarded(CostRungs, calibration=self.cost_calibration))
        return rules


def check_prior(prior: Any) -> None:
    """Refuse a ``prior`` that names no source (its file is read, and checked, by the adapter)."""
    if prior is None or prior == PRIOR_SHIPPED:
        return
    if not isinstance(prior, str) or not prior.strip():
        raise SettingError("prior", "must be shipped, mlflow:<experiment or sweep> or a file", prior)
    if prior.startswith(PRIOR_MLFLOW) and not prior[len(PRIOR_MLFLOW) :].strip():
        raise SettingError("prior", "mlflow: needs an experiment or sweep name", prior)
    if not prior.startswith(PRIOR_MLFLOW) and not prior.endswith(PRIOR_FILES):
        raise SettingError(
            "prior",
            f"must be shipped, mlflow:<experiment or sweep> or a file ({', '.join(PRIOR_FILES)})",
            prior,
        )


def policy_from_settings(
    settings: ConvergenceSettings | Mapping[str, Any],
    *,
    mode: str,
    chance: float | None,
    budget: int,
    total_epochs: int | None,
    sweep_seed: int = 0,
    scale: float | None = 1.0,
    prior: PriorModel | None = None,
) -> ConvergencePolicy:
    """The policy configured by ``settings`` (a mapping is read by :meth:`ConvergenceSettings.from_mapping`).

    ``mode``, ``chance`` and ``scale`` (the unit of the margins in metric units, 1 for a
    fraction; None: measured, "min" only) are the sweep's metric's; ``budget`` is the epochs of one attempt,
    ``total_epochs`` the sweep's (trials x budget; None: no sweep-wide restart budget and rank
    rules in any sweep); ``sweep_seed`` seeds the restarts.
    """
    if not isinstance(settings, ConvergenceSettings):
        settings = ConvergenceSettings.from_mapping(settings)
    return ConvergencePolicy(
        settings.policy_config(mode=mode, chance=chance, scale=scale),
        budget=budget,
        total_epochs=total_epochs,
        sweep_seed=sweep_seed,
        rules=settings.rank_rules(budget=budget, total_epochs=total_epochs),
        prior=None if prior is None else PriorGuard(prior, settings.prior_cut, settings.prior_spare),
    )
