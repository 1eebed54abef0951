"""Warm start: a trial's model starts from an earlier model's tensors wherever names and shapes match.

The source (``trainable.init_from``, made absolute by :mod:`orchestrator.init_source`) is

- a checkpoint file in this project's format (``checkpoint.pt``: the model's state dict saved
  under ``model``, as :meth:`orchestrator.trial.Trial.report` writes it), or a bare state dict;
- a directory: a checkpoint directory holding ``checkpoint.pt``, or a Ray trial directory,
  whose latest ``checkpoint_*`` is read;
- an MLflow model URI (``models:/name/version``, ``runs:/id/model``), loaded with
  ``mlflow.pytorch`` from the sweep's tracking store, of which the state dict is taken.

The rule (:func:`load_matching`): every tensor of the model's ``state_dict()`` (parameters and
buffers) whose name is in the source with the same shape is copied from it; every other one
keeps the value the model was built with (the trial's seeded initialisation). A source that
matches none of the model's tensors is an :class:`InitError` (an architecture mismatch, not a
warm start). Loading happens after the seeded initialisation on every attempt, so a restart
re-initialises what was not loaded with its new seed and reloads the rest.

``python -m orchestrator.warmstart SPEC.json`` is the preflight check (:func:`main`): it reads
the source and, for a built-in model, builds the candidate models and refuses a source none of
them can load anything from; a problem is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from orchestrator.contract import CHECKPOINT_FILE

#: Prefixes of the MLflow model URIs a source may be.
MODEL_URI_PREFIXES = ("models:/", "runs:/")
#: The name a checkpoint keeps the model's state dict under (trainables.train saves it so).
MODEL_KEY = "model"
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)$")
_CACHE: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}


class InitError(ValueError):
    """The source cannot be read, or none of its tensors fits the model (one line, no key)."""


@dataclass(frozen=True)
class InitResult:
    """What a warm start did: the source, and the model's tensors it loaded and skipped."""

    source: str | None
    loaded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """``init_loaded`` and ``init_skipped``: tensors of the model loaded from the source, not loaded."""
        return {"init_loaded": len(self.loaded), "init_skipped": len(self.skipped)}


def is_model_uri(source: str) -> bool:
    """Whether ``source`` is an MLflow model URI (``models:/...`` or ``runs:/...``)."""
    return source.startswith(MODEL_URI_PREFIXES)


def checkpoint_path(source: str) -> str:
    """The checkpoint file ``source`` names: the file itself, a directory's ``checkpoint.pt``,
    or that of a Ray trial directory's latest ``checkpoint_<n>`` that has one."""
    if os.path.isfile(source):
        return source
    if not os.path.isdir(source):
        raise InitError(f"no file or directory {source}")
    direct = os.path.join(source, CHECKPOINT_FILE)
    if os.path.isfile(direct):
        return direct
    numbered = sorted(
        (int(m.group(1)), name) for name in os.listdir(source) if (m := _CHECKPOINT_DIR.match(name))
    )
    for _, name in reversed(numbered):
        path = os.path.join(source, name, CHECKPOINT_FILE)
        if os.path.isfile(path):
            return path
    raise InitError(f"no {CHECKPOINT_FILE} in {source} nor in a checkpoint_* directory under it")


def model_state(saved: Any, where: str) -> dict[str, torch.Tensor]:
    """The model's state dict in a loaded checkpoint: its ``state["model"]``, or the whole
    mapping when it is a bare state dict (names to tensors)."""
    if isinstance(saved, Mapping) and isinstance(saved.get("state"), Mapping):
        state = saved["state"].get(MODEL_KEY)
        if not isinstance(state, Mapping):
            names = ", ".join(sorted(map(str, saved["state"]))) or "nothing"
            raise InitError(f"{where} holds no {MODEL_KEY!r} state dict (saved: {names})")
        saved = state
    if not isinstance(saved, Mapping) or not saved:
        raise InitError(f"{where} is not a checkpoint (no state dict of tensors)")
    tensors = {str(k): v for k, v in saved.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InitError(f"{where} holds no tensors")
    return tensors


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The model's state dict in checkpoint file ``path`` (loaded with ``weights_only=True``)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitError(f"cannot read {path} as a checkpoint ({first[:200]})") from None
    return model_state(saved, path)


def read_state(source: str, tracking_uri: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of ``source`` (a file, a directory or an MLflow model URI), on the CPU;
    read once per process (a file again when it changed)."""
    if is_model_uri(source):
        key: tuple[Any, ...] = (source, tracking_uri)
    else:
        path = checkpoint_path(source)
        key = (path, os.stat(path).st_mtime_ns)
    if key not in _CACHE:
        if is_model_uri(source):
            from orchestrator.tracking.model import load_model_state

            try:
                state = load_model_state(source, tracking_uri)
            except Exception as exc:  # noqa: BLE001 - MLflow's many errors, as one line
                lines = str(exc).strip().splitlines()
                raise InitError(
                    f"cannot load {source}: {lines[0][:300] if lines else type(exc).__name__}"
                ) from None
            _CACHE[key] = model_state(state, source)
        else:
            _CACHE[key] = read_checkpoint(key[0])
    return _CACHE[key]


def split_matching(
    shapes: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(loaded, skipped) names of the model's tensors (``shapes``): loaded when ``state`` has
    the name with the same shape, else skipped; in the model's order."""
    loaded = tuple(n for n, s in shapes.items() if n in state and tuple(state[n].shape) == tuple(s))
    return loaded, tuple(n for n in shapes if n not in set(loaded))


def _mismatch(shapes: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], source: str) -> str:
    """The one-line message of a source none of whose tensors fits the model."""
    name = next(iter(shapes), "")
    if name in state:
        example = f"{name} is {list(shapes[name])} in the model, {list(state[name].shape)} there"
    else:
        example = f"the model's {name or 'nothing'} is not there; it has {next(iter(state))}"
    return (
        f"none of the {len(state)} tensors of {source} matches the model's {len(shapes)} "
        f"by name and shape ({example}): another architecture"
    )


def load_matching(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> InitResult:
    """Copy into ``model`` each tensor of ``state`` whose name and shape match one of its own;
    keep the others. Raises :class:`InitError` when nothing matches."""
    own = model.state_dict()
    shapes = {n: tuple(t.shape) for n, t in own.items()}
    loaded, skipped = split_matching(shapes, state)
    if not loaded:
        raise InitError(_mismatch(shapes, state, source))
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name].to(device=own[name].device, dtype=own[name].dtype))
    return InitResult(source, loaded, skipped)


def init_model(model: torch.nn.Module, spec: Mapping[str, Any]) -> InitResult:
    """Load the source of ``spec`` (``source``, ``tracking_uri``) into ``model`` by the rule."""
    source = spec["source"]
    return load_matching(model, read_state(source, spec.get("tracking_uri")), source)


def check(spec: Mapping[str, Any]) -> None:
    """Read the source; for a built-in model, refuse it when none of the candidate models
    (``spec["candidates"]``: hyperparameters of the architectures the space allows) can load
    any of its tensors."""
    state = read_state(spec["source"], spec.get("tracking_uri"))
    builtin = spec.get("builtin")
    if not builtin:
        return
    from trainables.data import INPUT_SHAPES, NUM_CLASSES
    from trainables.hparams import TrialParams
    from trainables.models import build_model

    first = None
    for hp in builtin["candidates"]:
        model = build_model(
            builtin["model"],
            INPUT_SHAPES[builtin["dataset"]],
            builtin.get("num_classes") or NUM_CLASSES[builtin["dataset"]],
            TrialParams.from_config(hp),
        )
        shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
        if split_matching(shapes, state)[0]:
            return
        first = first or _mismatch(shapes, state, spec["source"])
    raise InitError(first or f"{spec['source']}: no model to check")


def main(argv: list[str]) -> int:
    """``python -m orchestrator.warmstart SPEC.json``: :func:`check`; a problem is one line, exit 2."""
    with open(argv[0]) as f:
        spec = json.load(f)
    try:
        check(spec)
    except InitError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
