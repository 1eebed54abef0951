"""Stable seeds: a hash of named parts, so every random choice is reproducible (pure stdlib).

Shared by the convergence policy (a restart's seed) and the trainables (a trial's seeds), so
neither imports the other for it.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """Return a 31-bit seed that is a stable hash of ``parts`` (same parts, same seed)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def attempt_seed(config: dict, trial_id: str) -> int:
    """A trial attempt's seed: ``seed`` from its config when given, else derived from (sweep
    seed, trial, attempt).

    The trial is its ``trial_index`` (the searcher's sequence number, stable across runs of the
    same sweep) when the config has one, else Ray's trial id.
    """
    if config.get("seed") is not None:
        return int(config["seed"])
    trial = config.get("trial_index", trial_id)
    return derive_seed(config["run"]["sweep_seed"], trial, config.get("attempt", 0))
