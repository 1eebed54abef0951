"""Stable seeds for the trainables: :func:`orchestrator.seeding.derive_seed`, defined there once."""

from orchestrator.seeding import derive_seed

__all__ = ["derive_seed"]
