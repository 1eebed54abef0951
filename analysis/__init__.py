"""Offline analysis of finished sweeps: convergence diagnosis, tables and plots."""
