"""``trainable.init_from`` on the driver: the source made absolute for the trials, and its
preflight check, run in a subprocess so the driver never imports torch or MLflow's flavour.

The trials load the source themselves (:mod:`orchestrator.warmstart`, through
:meth:`orchestrator.trial.Trial.init_weights`); this module only says what they get and refuses,
before anything starts, a source that cannot be read: a missing file, a directory with no
checkpoint, a malformed checkpoint, an MLflow model URI the tracking store does not have, or,
for a built-in model, a checkpoint none of whose tensors fits any architecture the search
space allows (a user's function: that trial fails with the same one-line message).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.schema import SweepConfig
from orchestrator.tracking.uri import resolve_tracking_uri, sqlite_path

KEY = "trainable.init_from"
#: Prefixes of the MLflow model URIs a source may be (orchestrator.warmstart has the same).
MODEL_URI_PREFIXES = ("models:/", "runs:/")
#: The built-in models' hyperparameters that change their tensors' names or shapes.
ARCHITECTURE = ("hidden_layers", "width", "batch_norm", "dropout")
#: At most this many architectures are built by the check (the first ones of the grid).
MAX_CANDIDATES = 64


def init_spec(cfg: SweepConfig, launch_dir: str) -> dict[str, Any] | None:
    """What a trial gets as ``run["init_from"]``: the source (a path made absolute against
    ``launch_dir``, or the MLflow URI as it is) and the tracking URI to load a model URI from;
    None without ``trainable.init_from``."""
    source = cfg.trainable.init_from
    if source is None:
        return None
    if not source.startswith(MODEL_URI_PREFIXES):
        return {
            "source": os.path.abspath(os.path.join(launch_dir, os.path.expanduser(source))),
            "tracking_uri": None,
        }
    return {"source": source, "tracking_uri": resolve_tracking_uri(cfg.tracking.uri, launch_dir)}


def candidates(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The built-in model's architectures the space allows: every combination of the
    :data:`ARCHITECTURE` values (a searched one at its grid of 3 points), at most
    :data:`MAX_CANDIDATES`, each with the fixed values."""
    space = cfg.space
    axes = [
        [(name, v) for v in space.searched[name].grid(3)]
        if name in space.searched
        else [(name, space.fixed[name])]
        for name in ARCHITECTURE
        if name in space.searched or name in space.fixed
    ]
    combos = itertools.islice(itertools.product(*axes), MAX_CANDIDATES)
    return [{**space.fixed, **dict(combo)} for combo in combos]


def _this_code_first() -> dict[str, str]:
    """This environment with the directory holding this ``orchestrator`` package first on
    PYTHONPATH: the check runs this code, not another install's."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def check_init_from(cfg: SweepConfig, launch_dir: str, timeout_s: float = 300.0) -> None:
    """Refuse (ConfigError naming ``trainable.init_from``) a source the trials could not load.

    A model URI needs the tracking store: a SQLite store that does not exist yet is refused
    here, before MLflow would create it.
    """
    spec = init_spec(cfg, launch_dir)
    if spec is None:
        return
    db = sqlite_path(spec["tracking_uri"]) if spec["tracking_uri"] else None
    if db is not None and not os.path.isfile(db):
        raise ConfigError(f"{KEY}: no MLflow store at {db} to load {spec['source']} from")
    if not cfg.trainable.own:
        t = cfg.trainable
        classes = len(t.data.classes) if t.data.classes else None  # None: every class of the dataset
        spec["builtin"] = {
            "model": t.model,
            "dataset": t.dataset,
            "num_classes": classes,
            "candidates": candidates(cfg),
        }
    with tempfile.NamedTemporaryFile("w", prefix="init-from-", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.warmstart", f.name],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=_this_code_first(),
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{KEY}: could not read {spec['source']} within {timeout_s:.0f} s") from None
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise ConfigError(f"{KEY}: {lines[-1] if lines else f'the check exited with {proc.returncode}'}")
