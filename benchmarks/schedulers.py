"""The schedulers a replay compares, with the settings a user would pick, built fresh per repeat.

Settings (time in epochs, Ray's ``time_attr="training_iteration"``; ``max_t`` = the bank's epochs):

- ``asha``: ``ASHAScheduler(grace_period=1, reduction_factor=3, brackets=1)``; reduction factor 3
  as the project's ``conf/scheduler/asha.yaml`` and both HyperBands, grace 1 as Ray's default.
- ``hyperband``: ``HyperBandScheduler(reduction_factor=3)`` (Ray's default eta).
- ``median``: ``MedianStoppingRule(grace_period=3, min_samples_required=3)`` as
  ``conf/scheduler/median.yaml`` (hard stop, ``min_time_slice=0``: Ray's defaults).
- ``optuna_hyperband``: ``HyperbandPruner(min_resource=1, max_resource=max_t, reduction_factor=3)``.
- ``optuna_median``: ``MedianPruner(n_startup_trials=5, n_warmup_steps=3)`` (Optuna's default
  startup, warm-up matching ``median``'s grace period).
- ``fifo``: Ray's ``FIFOScheduler``: every trial runs its whole budget.
- ``topk``: ``TopKScheduler``: everyone one epoch, then the top ``max(1, n // 8)`` to the budget.
- ``convergence``: the project's ``ConvergenceScheduler`` when ``orchestrator.scheduler`` provides
  it (built by ``make_convergence``, the one place that knows its constructor); skipped otherwise.
- ``convergence_cost``: the same with ``cost_rungs=true`` (also judged at equal training time).
- ``convergence_prior``: the same with ``prior=shipped`` learned leave-one-bank-out: on every
  default bank but the one replayed (``benchmarks.train_prior.prior_without``), so the bank being
  replayed is never in its own prior.
- ``convergence_prior_family``: the same, the prior learned on the other banks of the replayed
  bank's model family only (LCBench, this project's MLPs, its CNN:
  ``benchmarks.train_prior.family``), as ``prior=mlflow:<your experiment>`` learns from a user's
  earlier sweeps of one model family; the default policy where the family has no other bank.
- ``convergence_norestart``: the same with ``max_restarts=0`` (a ``scheduler.*`` override, as a user
  would write it): what the restarts add to the default policy.
- ``bohb_promotion``: Ray's ``HyperBandForBOHB(reduction_factor=3)``, the only Ray 2.60 scheduler
  that promotes by pause and resume (``ASHAScheduler`` stops or continues, it never pauses): a
  trial reaching its rung is PAUSED until its bracket is full, then the top ``1/3`` resume where
  they stopped. Without its BO searcher (``TuneBOHB``): the configurations come in the repeat's
  random order; its ``on_pause``/``on_unpause`` calls go to ``replay_sim.FixedOrderSearcher``.
- ``oracle``: not a method, a bound: ``benchmarks.oracle.OracleScheduler`` reads the bank and stops
  every configuration that never reaches the target after one epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandForBOHB,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from benchmarks.bank import Bank
from benchmarks.oracle import OracleScheduler, hitters
from benchmarks.replay_sim import METRIC, MODE
from benchmarks.topk import TopKScheduler

TIME_ATTR = "training_iteration"
ASHA_GRACE, ASHA_RF = 1, 3
HYPERBAND_RF = 3
MEDIAN_GRACE, MEDIAN_MIN_SAMPLES = 3, 3
OPTUNA_MEDIAN_STARTUP = 5


@dataclass(frozen=True)
class SchedulerSpec:
    """How to build one compared scheduler for a bank and a number of trials per repeat.

    Attributes:
        name: The name used on the command line, in tables and in JSON.
        kind: ``"ray"`` (a ``TrialScheduler`` replayed by ``SimController``) or ``"optuna"`` (a pruner).
        make: ``make(bank, n_trials)`` returns a fresh scheduler or pruner.
    """

    name: str
    kind: str
    make: Callable[[Bank, int], Any]


# --- ConvergenceScheduler: the ONE place that knows how to build it ---------------------------


def convergence_unavailable() -> str | None:
    """Return why ``orchestrator.scheduler.ConvergenceScheduler`` cannot be used, or ``None`` if it can."""
    try:
        from orchestrator import scheduler as module
    except Exception as exc:  # noqa: BLE001 - a half-written module can fail in any way
        return f"orchestrator.scheduler does not import ({type(exc).__name__}: {exc})"
    if not hasattr(module, "ConvergenceScheduler"):
        return "orchestrator.scheduler has no ConvergenceScheduler"
    return None


def make_convergence(
    epochs: int,
    n_trials: int,
    chance: float | None = None,
    overrides: dict[str, Any] | None = None,
    prior: Any = None,
) -> TrialScheduler:
    """Build the project's ``ConvergenceScheduler`` with the product defaults, maximizing ``val_acc``.

    The settings are the product's defaults, ``orchestrator.policy.ConvergenceSettings`` (which
    ``conf/scheduler/convergence.yaml`` takes its keys from), turned into a policy by
    ``orchestrator.policy.policy_from_settings``, the function
    ``orchestrator.scheduling.build_policy`` uses: ``budget=epochs``, a sweep budget of
    ``n_trials * epochs`` epochs for the restart budget, ``chance`` as the chance-level hint,
    sweep seed 0; ``overrides`` replace settings as command-line overrides of ``scheduler.*`` would;
    ``prior`` is the prior model the policy uses (``orchestrator.policy.prior.PriorModel``).
    """
    from orchestrator.policy import policy_from_settings
    from orchestrator.scheduler import ConvergenceScheduler

    policy = policy_from_settings(
        overrides or {},
        mode=MODE,
        chance=chance,
        budget=epochs,
        total_epochs=n_trials * epochs,
        sweep_seed=0,
        prior=prior,
    )
    return ConvergenceScheduler(policy, metric=METRIC, mode=MODE)


# ------------------------------------------------------------------------------------------------


def _asha(bank: Bank, n_trials: int) -> TrialScheduler:
    grace = min(ASHA_GRACE, bank.max_epochs)
    return ASHAScheduler(
        time_attr=TIME_ATTR, max_t=bank.max_epochs, grace_period=grace, reduction_factor=ASHA_RF
    )


def _hyperband(bank: Bank, n_trials: int) -> TrialScheduler:
    return HyperBandScheduler(time_attr=TIME_ATTR, max_t=bank.max_epochs, reduction_factor=HYPERBAND_RF)


def _bohb_promotion(bank: Bank, n_trials: int) -> TrialScheduler:
    return HyperBandForBOHB(time_attr=TIME_ATTR, max_t=bank.max_epochs, reduction_factor=HYPERBAND_RF)


def _median(bank: Bank, n_trials: int) -> TrialScheduler:
    return MedianStoppingRule(
        time_attr=TIME_ATTR,
        grace_period=min(MEDIAN_GRACE, bank.max_epochs),
        min_samples_required=MEDIAN_MIN_SAMPLES,
    )


def _optuna_hyperband(bank: Bank, n_trials: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=bank.max_epochs, reduction_factor=3)


def _optuna_median(bank: Bank, n_trials: int) -> optuna.pruners.BasePruner:
    warmup = min(MEDIAN_GRACE, bank.max_epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=OPTUNA_MEDIAN_STARTUP, n_warmup_steps=warmup)


def _convergence(bank: Bank, n_trials: int) -> TrialScheduler:
    return make_convergence(bank.max_epochs, n_trials, chance=bank.chance_hint)


def _convergence_cost(bank: Bank, n_trials: int) -> TrialScheduler:
    overrides = {"cost_rungs": True}
    return make_convergence(bank.max_epochs, n_trials, chance=bank.chance_hint, overrides=overrides)


def _convergence_prior(bank: Bank, n_trials: int, same_family: bool = False) -> TrialScheduler:
    from benchmarks.train_prior import prior_without

    prior = prior_without(bank.name, same_family)
    if prior is None:  # no earlier sweep of its family: the default policy, as for a user without one
        return make_convergence(bank.max_epochs, n_trials, chance=bank.chance_hint)
    overrides = {"prior": "shipped"}
    return make_convergence(
        bank.max_epochs, n_trials, chance=bank.chance_hint, overrides=overrides, prior=prior
    )


def _convergence_norestart(bank: Bank, n_trials: int) -> TrialScheduler:
    overrides = {"max_restarts": 0}
    return make_convergence(bank.max_epochs, n_trials, chance=bank.chance_hint, overrides=overrides)


SCHEDULERS: dict[str, SchedulerSpec] = {
    spec.name: spec
    for spec in (
        SchedulerSpec("asha", "ray", _asha),
        SchedulerSpec("hyperband", "ray", _hyperband),
        SchedulerSpec("bohb_promotion", "ray", _bohb_promotion),
        SchedulerSpec("median", "ray", _median),
        SchedulerSpec("optuna_hyperband", "optuna", _optuna_hyperband),
        SchedulerSpec("optuna_median", "optuna", _optuna_median),
        SchedulerSpec("fifo", "ray", lambda bank, n: FIFOScheduler()),
        SchedulerSpec("topk", "ray", lambda bank, n: TopKScheduler(n_trials=n)),
        SchedulerSpec("convergence", "ray", _convergence),
        SchedulerSpec("convergence_cost", "ray", _convergence_cost),
        SchedulerSpec("convergence_prior", "ray", _convergence_prior),
        SchedulerSpec("convergence_prior_family", "ray", lambda bank, n: _convergence_prior(bank, n, True)),
        SchedulerSpec("convergence_norestart", "ray", _convergence_norestart),
        SchedulerSpec("oracle", "ray", lambda bank, n: OracleScheduler(hitters(bank))),
    )
}


def resolve(names: list[str] | None) -> tuple[list[SchedulerSpec], list[str]]:
    """Return the specs for ``names`` (all when ``None``) and notes on those skipped.

    Raises:
        ValueError: A name is not a known scheduler.
    """
    unknown = [n for n in names or [] if n not in SCHEDULERS]
    if unknown:
        raise ValueError(f"unknown scheduler(s) {unknown}; known: {', '.join(SCHEDULERS)}")
    specs, notes = [], []
    for name in names or list(SCHEDULERS):
        reason = convergence_unavailable() if name.startswith("convergence") else None
        if reason is not None:
            notes.append(f"{name} skipped: {reason}")
            continue
        specs.append(SCHEDULERS[name])
    return specs, notes
