"""Adapters from users' training frameworks to the :class:`~orchestrator.trial.Trial` API.

Each adapter is an optional extra and imports its framework only when its module is imported:
``orchestrator.integrations.lightning`` needs ``pip install 'convergence-hpo[lightning]'``.
"""
