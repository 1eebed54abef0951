"""The built-in MLP and CNN trainables: a train function ``train(hp, trial)`` written with the
same :class:`orchestrator.trial.Trial` API as a user's own.

The sweep binds ``model``, ``dataset`` and ``data`` (``trainable.model``, ``trainable.dataset``,
``trainable.data.*``) as keyword arguments (a Hydra ``_target_`` with ``_partial_: true``).
"""

from __future__ import annotations

from typing import Any

from trainables.data import Dataset, load_dataset
from trainables.hparams import TrialParams
from trainables.trainer import Trainer

_DATA_CACHE: dict[tuple, Dataset] = {}


def cached_dataset(dataset: str, data: dict[str, Any]) -> Dataset:
    """Load ``dataset`` split as ``data`` says, once per worker process (actors are reused)."""
    classes = tuple(data["classes"]) if data.get("classes") is not None else None
    key = (dataset, data["root"], data["val_fraction"], data["split_seed"], data["max_samples"], classes)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(
            key[0], key[1], val_fraction=key[2], split_seed=key[3], max_samples=key[4], classes=classes
        )
    return _DATA_CACHE[key]


def train(hp: dict[str, Any], trial: Any, *, model: str, dataset: str, data: dict[str, Any]) -> None:
    """Train the built-in ``model`` on ``dataset`` for the trial's budget, reporting every epoch.

    Reports ``train_loss``, ``val_loss`` and ``val_acc``; the trial adds ``epoch``, ``attempt``,
    ``seed``, ``lr``, ``grad_norm`` and ``dead_frac`` (the watched model and optimizer), and
    saves the model and optimizer as the trial's checkpoint. With ``trainable.init_from`` the
    seeded model is warm-started (:meth:`~orchestrator.trial.Trial.init_weights`) before a
    checkpoint of this attempt, if any, is restored.
    """
    params = TrialParams.from_config({**hp, "epochs": trial.epochs})
    trainer = Trainer(model, cached_dataset(dataset, data), params, trial.seed, trial.device)
    trial.init_weights(trainer.model)
    trial.watch(trainer.model, trainer.optimizer)
    trainer.epoch = trial.restore(model=trainer.model, optimizer=trainer.optimizer)
    while trainer.epoch < params.epochs:
        m = trainer.train_epoch()
        trial.report(
            trainer.epoch,
            train_loss=m.train_loss,
            val_loss=m.val_loss,
            val_acc=m.val_acc,
            params=sum(p.numel() for p in trainer.model.parameters()),
            checkpoint={"model": trainer.model, "optimizer": trainer.optimizer},
        )
