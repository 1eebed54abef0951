"""The function Ray runs for each trial, importable without importing torch.

The driver hands this to the Tuner; torch and the training code load only in the workers,
which keeps the driver small.
"""

from __future__ import annotations

from typing import Any


def train(config: dict[str, Any]) -> None:
    """Run :func:`trainables.train.train_trial` in this worker."""
    from trainables.train import train_trial

    train_trial(config)
