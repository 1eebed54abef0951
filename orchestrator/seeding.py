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
