"""The train function the orchestrator tunes: ``train(hp, trial)`` fits :class:`DigitsNet` with a
``lightning.Trainer`` whose :class:`ConvergenceCallback` reports each epoch to the sweep."""

from __future__ import annotations

import lightning as L

from digitnet.model import loaders, make_model
from orchestrator.integrations.lightning import ConvergenceCallback


def train(hp: dict, trial) -> None:
    """Fit for ``trial.epochs`` epochs on the trial's device, resuming this attempt's checkpoint."""
    train_loader, val_loader = loaders(int(hp.get("batch_size", 64)))
    callback = ConvergenceCallback({"val_acc": "val_acc", "val_loss": "val_loss", "train_loss": "train_loss"})
    trainer = L.Trainer(
        max_epochs=trial.epochs,
        callbacks=[callback],
        accelerator=trial.device.type,
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(make_model(hp), train_loader, val_loader, ckpt_path=callback.ckpt_path)
