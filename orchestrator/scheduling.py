"""The trial scheduler named by ``scheduler.name``: Ray Tune's own FIFO, ASHA or median rule."""

from __future__ import annotations

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from orchestrator.config import SweepConfig


def build_scheduler(cfg: SweepConfig) -> TrialScheduler:
    """Build the configured scheduler; decisions are per epoch (Ray's ``training_iteration``)."""
    s, epochs = cfg.scheduler, cfg.trainable.epochs
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
