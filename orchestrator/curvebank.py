"""The curve bank file: one JSON record per line (gzip or plain), one run of a configuration each.

The format is ``benchmarks/curves/README.md``'s: the replay benchmark reads banks with it
(``benchmarks/bank.py``) and ``scheduler.prior`` learns from one (``orchestrator/priors.py``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

#: The keys every record must hold.
REQUIRED_KEYS = ("config_id", "config", "seed", "epochs", "val_acc")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read one JSON object per non-empty line of a gzip (``.gz``) or plain JSON-lines file; a
    record without a :data:`REQUIRED_KEYS` key, or a file without records, is a ValueError
    naming the file (and line)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [key for key in REQUIRED_KEYS if key not in record]
            if missing:
                raise ValueError(f"{path}:{line_no}: record lacks required key(s) {missing}")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records
