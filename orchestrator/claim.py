"""A sweep's results directory, ``<storage.path>/<name>_<YYYYmmdd-HHMMSS>``, claimed race-free.

Two sweeps with the same ``name`` and ``storage.path`` started in the same second (two SLURM
jobs, say) must not share a directory: Ray would write both into one experiment and each would
read the other's trials. On a local path the directory is claimed with ``os.mkdir``, which
exactly one process wins; a loser takes the next free suffix ``-2``, ``-3``, ... A remote
storage URI (``s3://``, ``gs://``...) cannot be claimed, so its name carries a short random
suffix instead (``-3fa9c2``: 24 bits, a collision needs two sweeps in one second drawing the
same of 16.7 million values).

A results directory that fills up or turns read-only mid-sweep is named by
:func:`storage_problem`, so the sweep can end with one line instead of Ray's traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
import time

#: What a full or read-only filesystem (or a quota, or a file-size limit) says on a write.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG})
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


def storage_problem(directory: str, exc: BaseException | None = None) -> str | None:
    """Why the results ``directory`` cannot be written any more, or None when it can.

    The rule: an OSError of :data:`STORAGE_ERRNOS` anywhere in ``exc``'s chain (its causes and
    contexts) names the problem; else a probe write (64 KiB, fsynced, removed) in ``directory``
    decides, since Ray often fails later, on a file the full disk left truncated, or not at all
    (a directory that turned read-only fails every trial, and Tune carries on). Remote storage
    (``://``) is not probed: None.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in STORAGE_ERRNOS:
            return os.strerror(link.errno)
        link = link.__cause__ or link.__context__
    if "://" in directory or not os.path.isdir(directory):
        return None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-") as probe:
            probe.write(bytes(64 * 1024))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        return err.strerror or str(err)
    return None


__all__ = ["claim_results_dir", "results_name", "storage_problem"]
