"""Hand-made curve banks for the replay tests: records in the bank format, written as a bank file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


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
