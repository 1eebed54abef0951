"""The trial scheduler named by ``scheduler.name``: ours (convergence) or Ray's FIFO, ASHA, median."""

from __future__ import annotations

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from orchestrator.config import SweepConfig
from orchestrator.policy import ConvergencePolicy, PolicyConfig, thresholds_from
from orchestrator.rungs import AshaRungs
from orchestrator.scheduler import ConvergenceScheduler
from trainables.data import NUM_CLASSES


def build_policy(cfg: SweepConfig, num_trials: int) -> ConvergencePolicy:
    """The convergence policy configured by ``scheduler.*`` for a sweep of ``num_trials``."""
    s, epochs = cfg.scheduler, cfg.trainable.epochs
    config = PolicyConfig(
        mode=cfg.mode,
        chance=1.0 / NUM_CLASSES if cfg.metric == "val_acc" else None,
        max_restarts=s.max_restarts,
        restart_budget=s.restart_budget,
        restart_on_plateau_bad=s.restart_on_plateau_bad,
        stop_converged=s.stop_converged,
        prune_predicted_worse=s.prune_predicted_worse,
        remedy_lr_factor=s.remedy_lr_factor,
        remedy_leaky_relu=s.remedy_leaky_relu,
        thresholds=thresholds_from(s.thresholds),
    )
    inner = None
    if s.inner == "asha":
        inner = AshaRungs(min(s.grace_period, epochs), s.reduction_factor, epochs)
    return ConvergencePolicy(
        config, budget=epochs, total_epochs=num_trials * epochs, sweep_seed=cfg.seed, inner=inner
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
