"""Where a sweep came from: the parent run's params and tags (settings, code version, storage)."""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Any

from orchestrator.config import SweepConfig
from orchestrator.study import shown


def sweep_params(cfg: SweepConfig, trials: int) -> dict[str, Any]:
    """The sweep's settings as MLflow params: the headline ones (a user's function instead of
    the built-in model and dataset), the searched space, and every ``search.*`` and
    ``scheduler.*`` setting under its dotted key."""
    params: dict[str, Any] = {
        "num_samples": trials,
        "search": cfg.search.algorithm,
        "seed": cfg.seed,
        "scheduler": cfg.scheduler.name,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "model": cfg.trainable.model,
        "epochs": cfg.trainable.epochs,
        "cpus_per_trial": cfg.resources.cpus_per_trial,
        "gpus_per_trial": cfg.resources.gpus_per_trial,
    }
    if cfg.trainable.own:
        fn = cfg.trainable.fn
        params["fn"] = fn.get("_target_") if isinstance(fn, dict) else fn
        params.update({"model_fn": cfg.trainable.model_fn} if cfg.trainable.model_fn else {})
    else:
        params["dataset"] = cfg.trainable.dataset
    if cfg.trainable.init_from is not None:
        params["init_from"] = cfg.trainable.init_from
    params.update({f"space.{k}": v for k, v in cfg.trainable.hparams.items()})
    params.update(flat("search", dataclasses.asdict(cfg.search)))
    params["search.storage"] = shown(cfg.search.storage) if cfg.search.storage else None  # no password
    params.update(flat("scheduler", dataclasses.asdict(cfg.scheduler)))
    return params


def sweep_tags(cfg: SweepConfig, experiment: str, storage: str, launch_dir: str) -> dict[str, str]:
    """The parent run's tags: the sweep's name, its Ray experiment and storage, the git commit of
    the launch directory when it is a git checkout."""
    tags = {"sweep": cfg.name, "ray_experiment": experiment, "storage": storage}
    commit = git_commit(launch_dir)
    if commit:
        tags["git_commit"] = commit
    return tags


def flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}``: settings as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def git_commit(directory: str) -> str | None:
    """The commit checked out in ``directory``, or None (not a git checkout, or no git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
