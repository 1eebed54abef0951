"""One trial in a Ray worker: seed everything, build the :class:`~orchestrator.trial.Trial`,
call the train function named in the trial's ``run`` settings, report through Ray Tune.

The trial config holds the hyperparameters (searched and fixed) plus bookkeeping: ``attempt``,
``trial_index``, ``epochs`` (the budget of one attempt) and a ``run`` mapping the same for
every trial (``fn``, ``model_fn``, ``checkpoint_every``, ``checkpoint_at``, ``sweep_seed``,
``launch_dir``).
``random``, numpy and torch are seeded with the attempt's seed before the function is called.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from orchestrator.contract import hyperparameters, warm_source
from orchestrator.seeding import attempt_seed
from orchestrator.target import load_target
from orchestrator.trial import Sink, Source, Trial, active
from orchestrator.trials import local_launch_dir


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trial_device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray then sets CUDA_VISIBLE_DEVICES), else CPU."""
    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _set_threads() -> None:
    """As many torch threads as CPUs Ray gave the trial (at least one)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1) if ray.is_initialized() else 1
    torch.set_num_threads(max(1, int(cpus)))


def _to_tune(result: dict[str, Any], directory: str | None) -> None:
    checkpoint = tune.Checkpoint.from_directory(directory) if directory is not None else None
    tune.report(result, checkpoint=checkpoint)


def call_function(
    config: dict[str, Any], trial_id: str, launch_dir: str | None, sink: Sink, source: Source | None = None
) -> Trial:
    """Call the train function of ``config["run"]["fn"]`` once, as ``fn(hp, trial)``, with a
    :class:`Trial` of the config's attempt, budget and checkpoint period that reports to
    ``sink``; ``random``, numpy and torch seeded with the attempt's seed first. Returns the trial."""
    run = config["run"]
    seed = attempt_seed(config, trial_id)
    fn = load_target(run["fn"], launch_dir)
    trial = Trial(
        seed=seed,
        attempt=int(config.get("attempt", 0)),
        epochs=int(config["epochs"]),
        hp=hyperparameters(config),
        sink=sink,
        source=source,
        device=trial_device(),
        checkpoint_every=int(run["checkpoint_every"]),
        checkpoint_at=run.get("checkpoint_at", ()),
        init_from=warm_source(config),
    )
    seed_everything(seed)
    with active(trial):
        fn(dict(trial.hp), trial)
    return trial


def run_trial(config: dict[str, Any]) -> None:
    """Run the trial's train function ``fn(hp, trial)`` for one attempt.

    Raises:
        RuntimeError: the function returned without reporting an epoch.
    """
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint
    _set_threads()
    launch_dir = local_launch_dir(config["run"])
    trial = call_function(config, tune.get_context().get_trial_id(), launch_dir, _to_tune, _checkpoint)
    if trial.reported == 0:
        raise RuntimeError(
            "trainable.fn: the function returned without reporting (call trial.report(epoch, ...))"
        )


def _checkpoint() -> Any:
    found = tune.get_checkpoint()
    return found.as_directory() if found is not None else None
