"""Convergence-aware hyperparameter search on Ray Tune + Optuna, recorded in MLflow."""

__version__ = "0.1.0"
