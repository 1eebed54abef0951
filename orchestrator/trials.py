"""What every trial of a sweep is given besides its searched values: the fixed values, the
budget, and the ``run`` settings :mod:`orchestrator.runner` reads (which function to call,
how often to checkpoint, the sweep seed, where the user's code is)."""

from __future__ import annotations

import os
from typing import Any

from orchestrator.config import SweepConfig
from orchestrator.init_source import init_spec
from orchestrator.objectives import multi_objective_settings, several
from orchestrator.policy import ConvergenceSettings

#: The built-in trainables' train function, as a Hydra partial (``trainable.fn`` of a user).
BUILTIN = {"_target_": "trainables.train.train", "_partial_": True, "_convert_": "all"}


def param_space(cfg: SweepConfig, launch_dir: str) -> dict[str, Any]:
    """Every trial's config besides its searched values: fixed values, budget, run settings."""
    return {
        **cfg.space.fixed,
        "epochs": cfg.trainable.epochs,
        "attempt": 0,
        "run": run_settings(cfg, launch_dir),
    }


def run_settings(cfg: SweepConfig, launch_dir: str) -> dict[str, Any]:
    """The ``run`` mapping of every trial's config (:mod:`orchestrator.runner` reads it).

    On this machine the trials import the user's function from ``launch_dir``; on a joined
    cluster from the copy of it Ray ships as their working directory
    (:func:`orchestrator.cluster.launch_env`)."""
    t = cfg.trainable
    return {
        "fn": train_function(t, launch_dir),
        "model_fn": t.model_fn,
        "checkpoint_every": t.checkpoint_every,
        "checkpoint_at": checkpoint_at(cfg),
        "sweep_seed": cfg.seed,
        "launch_dir": launch_dir if cfg.cluster.mode == "local" else None,  # a cluster gets a copy
        "init_from": init_spec(cfg, launch_dir),  # the warm start's source, None without one
    }


def checkpoint_at(cfg: SweepConfig) -> list[int]:
    """Epochs where every trial checkpoints besides each ``checkpoint_every``-th: those where the
    convergence scheduler may pause it (its rungs, ``scheduler.pause``), so it resumes there."""
    s = cfg.scheduler
    if not isinstance(s, ConvergenceSettings):
        return []
    return (multi_objective_settings(s) if several(cfg) else s).pause_epochs(cfg.trainable.epochs)


def train_function(t: Any, launch_dir: str) -> Any:
    """What a trial calls: the user's ``trainable.fn``, or the built-in ``trainables.train.train``
    bound to ``trainable.model``, ``dataset`` and ``data`` (its data root made absolute)."""
    if t.own:
        return {"_convert_": "all", **t.fn} if isinstance(t.fn, dict) else t.fn
    root = os.path.abspath(os.path.join(launch_dir, t.data.root)) if t.data.root else None
    data = {
        "root": root,
        "val_fraction": t.data.val_fraction,
        "split_seed": t.data.split_seed,
        "max_samples": t.data.max_samples,
        "classes": t.data.classes,
    }
    return {**BUILTIN, "model": t.model, "dataset": t.dataset, "data": data}


def local_launch_dir(run: dict[str, Any]) -> str | None:
    """The sweep's launch directory from a trial's ``run`` settings when it exists on this
    machine, else None (a cluster's workers run in the copy Ray shipped instead, which is
    already their working directory)."""
    path = run.get("launch_dir")
    return path if path and os.path.isdir(path) else None
