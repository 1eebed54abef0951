"""Hand-made curve banks for the replay tests: records in the bank format, written as a bank file;
and a scheduler that restarts every trial once, for replaying restarts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def write_bank(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` as a bank file (one JSON object per line, gzip)."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def record(config_id: str, val_acc: list[float | None], seed: int = 0, **extra: Any) -> dict[str, Any]:
    """Return a bank record with ``val_acc``, budget = its length unless ``epochs`` is given."""
    base = {
        "dataset": "handmade",
        "config_id": config_id,
        "config": {"lr": 0.1},
        "seed": seed,
        "epochs": len(val_acc),
        "train_loss": [1.0] * len(val_acc),
        "val_loss": [1.0] * len(val_acc),
        "val_acc": val_acc,
        "grad_norm": None,
        "dead_frac": None,
        "epoch_time": None,
        "stopped_on_nonfinite": False,
    }
    return {**base, **extra}


class RestartOnceAt3(FIFOScheduler):
    """Test scheduler: restarts every trial once at epoch 3, by the in-place (PBT-style) protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, list[tuple[int, int, int, float]]] = {}

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        key = (result["attempt"], result["training_iteration"], result["seed"], result["val_acc"])
        self.seen.setdefault(trial.trial_id, []).append(key)
        if result["attempt"] == 0 and result["training_iteration"] == 3:
            tune_controller.pause_trial(trial, should_checkpoint=False)
            trial.set_config({**trial.config, "attempt": 1})
            trial.run_metadata.checkpoint_manager._latest_checkpoint_result = None
            return TrialScheduler.NOOP
        return TrialScheduler.CONTINUE
