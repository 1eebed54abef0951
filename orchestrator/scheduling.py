"""The trial scheduler named by ``scheduler.name``: ours (convergence) or Ray's FIFO, ASHA, median."""

from __future__ import annotations

import os

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from orchestrator.config import SweepConfig
from orchestrator.objectives import multi_objective_settings, objectives_of, several, why_off
from orchestrator.policy import ConvergencePolicy, ConvergenceSettings, policy_from_settings
from orchestrator.priors import load_prior
from orchestrator.resume import SweepRecord, read_prior, write_prior
from orchestrator.scheduler import ConvergenceScheduler
from trainables.data import NUM_CLASSES


def build_policy(cfg: SweepConfig, num_trials: int, resumed: SweepRecord | None = None) -> ConvergencePolicy:
    """The convergence policy configured by ``scheduler.*`` for a sweep of ``num_trials``.

    Built by :func:`orchestrator.policy.policy_from_settings` from ``scheduler.*`` (a
    :class:`orchestrator.policy.ConvergenceSettings`), as the replay benchmark builds it; with
    several objectives without its one-objective pruning (:mod:`orchestrator.objectives`); with
    the prior ``scheduler.prior`` names, read here (:func:`orchestrator.priors.load_prior`), or,
    for the sweep ``resumed`` (its record), the prior it stored when it started
    (:func:`orchestrator.resume.read_prior`; its source, from where it was launched, only when it
    stored none).
    """
    epochs = cfg.trainable.epochs
    if not isinstance(cfg.scheduler, ConvergenceSettings):
        raise ValueError(
            f"scheduler.name: the convergence policy needs scheduler=convergence, got {cfg.scheduler.name!r}"
        )
    settings = multi_objective_settings(cfg.scheduler) if several(cfg) else cfg.scheduler
    prior = read_prior(resumed.directory) if resumed is not None and settings.prior is not None else None
    if prior is None:
        launch_dir = resumed.launch_dir if resumed is not None else os.getcwd()
        prior = load_prior(settings.prior, launch_dir=launch_dir, tracking_uri=cfg.tracking.uri)
    return policy_from_settings(
        settings,
        mode=cfg.mode,
        chance=chance_of(cfg),
        scale=scale_of(cfg),
        budget=epochs,
        total_epochs=num_trials * epochs,
        sweep_seed=cfg.seed,
        prior=prior,
    )


def keep_prior(scheduler: TrialScheduler, directory: str) -> None:
    """Store the convergence scheduler's prior in the sweep ``directory`` as it starts
    (:func:`orchestrator.resume.write_prior`), for a resumed sweep to use; nothing without one."""
    guard = scheduler.policy.prior if isinstance(scheduler, ConvergenceScheduler) else None
    if guard is not None:
        write_prior(directory, guard.model)


def chance_of(cfg: SweepConfig) -> float | None:
    """The objective's value for a random guess: ``trainable.metrics.chance``, else for a
    built-in's ``val_acc`` one over the dataset's classes (``trainables.data.NUM_CLASSES``:
    0.1 for digits, 1/3 for spirals; one over ``trainable.data.classes`` when it keeps fewer),
    else unknown (None)."""
    if cfg.trainable.metrics.chance is not None:
        return cfg.trainable.metrics.chance
    if not cfg.trainable.own and cfg.metric == "val_acc":
        classes = cfg.trainable.data.classes
        return 1.0 / (len(classes) if classes else NUM_CLASSES[cfg.trainable.dataset])
    return None


def scale_of(cfg: SweepConfig) -> float | None:
    """The unit of the policy's margins: ``trainable.metrics.scale``, else 1 for a built-in or
    a ``mode=max`` metric (a fraction), else None: measured from the trials' first epochs."""
    if cfg.trainable.metrics.scale is not None:
        return cfg.trainable.metrics.scale
    return 1.0 if not cfg.trainable.own or cfg.mode == "max" else None


def loss_of(cfg: SweepConfig) -> str:
    """The series that must go down: ``trainable.metrics.loss``, else ``val_loss`` for a
    built-in or a ``mode=max`` objective, else the objective itself."""
    if cfg.trainable.metrics.loss is not None:
        return cfg.trainable.metrics.loss
    return "val_loss" if not cfg.trainable.own or cfg.mode == "max" else cfg.metric


def build_scheduler(
    cfg: SweepConfig, num_trials: int, resumed: SweepRecord | None = None
) -> TrialScheduler:
    """Build the configured scheduler; decisions are per epoch (Ray's ``training_iteration``).
    ``resumed``: the record of the sweep it resumes (its stored prior: :func:`build_policy`)."""
    s, epochs = cfg.scheduler, cfg.trainable.epochs
    if s.name == "convergence":
        policy = build_policy(cfg, num_trials, resumed)
        return ConvergenceScheduler(
            policy,
            metric=cfg.metric,
            mode=cfg.mode,
            loss_key=loss_of(cfg),
            objectives=[o.metric for o in objectives_of(cfg)],
            why_off=why_off(cfg),
        )
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
