"""A sweep's results directory, ``<storage.path>/<name>_<YYYYmmdd-HHMMSS>``, claimed race-free.

Two sweeps with the same ``name`` and ``storage.path`` started in the same second (two SLURM
jobs, say) must not share a directory: Ray would write both into one experiment and each would
read the other's trials. On a local path the directory is claimed with ``os.mkdir``, which
exactly one process wins; a loser takes the next free suffix ``-2``, ``-3``, ... A remote
storage URI (``s3://``, ``gs://``...) cannot be claimed, so its name carries a short random
suffix instead (``-3fa9c2``: 24 bits, a collision needs two sweeps in one second drawing the
same of 16.7 million values).
"""

from __future__ import annotations

import os
import secrets
import time

#: How many suffixes a local claim tries before it gives up (each is a failed ``mkdir``).
MAX_TRIES = 1000


def results_name(name: str, now: float | None = None) -> str:
    """The unclaimed directory name of a sweep started at ``now``: ``<name>_<YYYYmmdd-HHMMSS>``."""
    return f"{name}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def claim_results_dir(storage: str, base: str) -> str:
    """Claim ``<storage>/<base>`` (else ``<base>-2``, ``<base>-3``...) and return the name taken.

    The rule: a name is this sweep's once its ``os.mkdir`` succeeded (the parent directories are
    made as needed); ``FileExistsError`` means another sweep (or an earlier one) has it, so the
    next suffix is tried. A storage URI (``://``) gets ``<base>-<6 hex digits>`` without a
    claim. Raises OSError when no name could be made (the storage cannot be written).
    """
    if "://" in storage:
        return f"{base}-{secrets.token_hex(3)}"
    os.makedirs(storage, exist_ok=True)
    for n in range(1, MAX_TRIES + 1):
        name = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(os.path.join(storage, name))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"{storage}: {base} and {MAX_TRIES - 1} suffixed names are all taken")


__all__ = ["claim_results_dir", "results_name"]
