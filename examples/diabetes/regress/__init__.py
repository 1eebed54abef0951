"""A small regression package tuned by the orchestrator (see ../README.md)."""
