"""The Ray Tune train function: one trial, reporting the metric contract every epoch.

The trial config holds the hyperparameters (searched and fixed) plus a ``run`` mapping with
what is the same for every trial (model, dataset, checkpoint period, sweep seed). The seed of
an attempt is ``hparams.seed`` when set, else derived from (sweep seed, trial, attempt).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from orchestrator.contract import CHECKPOINT_FILE
from trainables.data import Dataset, load_dataset
from trainables.hparams import TrialParams
from trainables.seeding import derive_seed
from trainables.trainer import Trainer

logger = logging.getLogger(__name__)

_DATA_CACHE: dict[tuple, Dataset] = {}


def cached_dataset(run: dict[str, Any]) -> Dataset:
    """Load the run's dataset once per worker process (actors are reused across trials)."""
    data = run["data"]  # every key set by the sweep (orchestrator/schema.py holds the defaults)
    key = (run["dataset"], data["root"], data["val_fraction"], data["split_seed"], data["max_samples"])
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(
            key[0], key[1], val_fraction=key[2], split_seed=key[3], max_samples=key[4]
        )
    return _DATA_CACHE[key]


def attempt_seed(config: dict[str, Any], trial_id: str) -> int:
    """``seed`` from the config when given, else derived from (sweep seed, trial, attempt).

    The trial is its ``trial_index`` (the searcher's sequence number, stable across runs of
    the same sweep) when the config has one, else Ray's trial id.
    """
    if config.get("seed") is not None:
        return int(config["seed"])
    trial = config.get("trial_index", trial_id)
    return derive_seed(config["run"]["sweep_seed"], trial, config.get("attempt", 0))


def _device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray then sets CUDA_VISIBLE_DEVICES), else CPU."""
    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _set_threads() -> None:
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1) if ray.is_initialized() else 1
    torch.set_num_threads(max(1, int(cpus)))


def _restore(trainer: Trainer, attempt: int) -> dict[str, Any] | None:
    """Continue from the trial's checkpoint when Ray hands one of this attempt; return the
    metrics of the epoch it was saved with (None when there is nothing to continue from).

    A checkpoint of an older attempt (the trial was restarted from scratch) is refused:
    training starts at epoch 1 with the new seed.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        state = torch.load(
            os.path.join(path, CHECKPOINT_FILE), map_location=trainer.device, weights_only=True
        )
    if state.get("attempt") != attempt:
        logger.warning(
            "ignoring a checkpoint of attempt %s (this is attempt %s)", state.get("attempt"), attempt
        )
        return None
    trainer.load_state_dict(state)
    logger.info("resumed at epoch %d from checkpoint", trainer.epoch)
    return state.get("metrics")


def train_trial(config: dict[str, Any]) -> None:
    """Train one trial for its epoch budget, reporting every epoch and checkpointing.

    Reports the metric contract (epoch, train_loss, val_loss, val_acc, grad_norm, dead_frac,
    lr, attempt, seed) each epoch; a checkpoint (with that epoch's metrics) goes with every
    ``checkpoint_every``-th epoch's report and with the last. A trial restored from a
    checkpoint first reports the checkpoint's epoch again, marked ``replayed``.
    """
    _set_threads()
    run = config["run"]
    params = TrialParams.from_config(config)
    attempt = int(config.get("attempt", 0))
    seed = attempt_seed(config, tune.get_context().get_trial_id())
    trainer = Trainer(run["model"], cached_dataset(run), params, seed, _device())
    saved = _restore(trainer, attempt)
    if saved is not None:
        # Ray may restore a checkpoint whose result never reached the driver (the process died
        # between the two): report that epoch again. The driver skips what it already has.
        tune.report({**saved, "replayed": True})
    every = int(run["checkpoint_every"])
    while trainer.epoch < params.epochs:
        m = trainer.train_epoch()
        metrics = {
            "epoch": trainer.epoch,
            "train_loss": m.train_loss,
            "val_loss": m.val_loss,
            "val_acc": m.val_acc,
            "grad_norm": m.grad_norm,
            "dead_frac": m.dead_frac,
            "lr": m.lr,
            "attempt": attempt,
            "seed": seed,
        }
        if trainer.epoch % every == 0 or trainer.epoch == params.epochs:
            with tempfile.TemporaryDirectory() as tmp:
                state = {**trainer.state_dict(attempt), "metrics": metrics}
                torch.save(state, os.path.join(tmp, CHECKPOINT_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(metrics)
