"""The trial scheduler named by ``scheduler.name``: ours (convergence) or Ray's FIFO, ASHA, median."""

from __future__ import annotations

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from orchestrator.config import SweepConfig
from orchestrator.policy import ConvergencePolicy, ConvergenceSettings, policy_from_settings
from orchestrator.scheduler import ConvergenceScheduler
from trainables.data import NUM_CLASSES


def build_policy(cfg: SweepConfig, num_trials: int) -> ConvergencePolicy:
    """The convergence policy configured by ``scheduler.*`` for a sweep of ``num_trials``.

    Built by :func:`orchestrator.policy.policy_from_settings` from ``scheduler.*`` (a
    :class:`orchestrator.policy.ConvergenceSettings`), as the replay benchmark builds it.
    """
    epochs = cfg.trainable.epochs
    if not isinstance(cfg.scheduler, ConvergenceSettings):
        raise ValueError(
            f"scheduler.name: the convergence policy needs scheduler=convergence, got {cfg.scheduler.name!r}"
        )
    return policy_from_settings(
        cfg.scheduler,
        mode=cfg.mode,
        chance=1.0 / NUM_CLASSES if cfg.metric == "val_acc" else None,
        budget=epochs,
        total_epochs=num_trials * epochs,
        sweep_seed=cfg.seed,
    )


def build_scheduler(cfg: SweepConfig, num_trials: int) -> TrialScheduler:
    """Build the configured scheduler; decisions are per epoch (Ray's ``training_iteration``)."""
    s, epochs = cfg.scheduler, cfg.trainable.epochs
    if s.name == "convergence":
        return ConvergenceScheduler(build_policy(cfg, num_trials), metric=cfg.metric, mode=cfg.mode)
    if s.name == "fifo":
        return FIFOScheduler()
    if s.name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            metric=cfg.metric,
            mode=cfg.mode,
            max_t=epochs,
            grace_period=min(s.grace_period, epochs),
            reduction_factor=s.reduction_factor,
        )
    if s.name == "median":
        return MedianStoppingRule(
            time_attr="training_iteration",
            metric=cfg.metric,
            mode=cfg.mode,
            grace_period=s.grace_period,
            min_samples_required=s.min_samples_required,
        )
    raise ValueError(f"scheduler.name: unknown {s.name!r}")  # validated in config
