"""Log the best trial's model to MLflow: ``python -m orchestrator.export SPEC.json``.

The sweep runs this in a subprocess, so the driver itself never imports torch. SPEC holds
the checkpoint directory, the trial's config (hyperparameters and its ``run`` settings), the
tracking URI, the run to log into (the sweep's; ``trial_run_id`` the best trial's) and an
optional registered model name. The checkpoint loads with ``weights_only=True``. A built-in
model, or a user's with ``trainable.model_fn``, is logged as an MLflow PyTorch model with the
input example its checkpoint kept; a user's function also has its checkpoint file logged on
the best trial's run.

``python -m orchestrator.export --serve WARM.json`` is the same export, started early
(:class:`orchestrator.exporting.ModelExporter`): it imports torch and MLflow, loads the
sweep's dataset (WARM's ``run``) and opens the store (WARM's ``tracking_uri``), then reads
one line on stdin, the path of a SPEC, exports it and exits; an empty line or end of input
exits at once with status 0.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch

from orchestrator.contract import CHECKPOINT_FILE, hyperparameters
from orchestrator.target import load_target
from orchestrator.tracking import log_checkpoint, log_pytorch_model, prepare_model_logging
from orchestrator.trials import local_launch_dir
from trainables.hparams import TrialParams
from trainables.models import build_model
from trainables.train import cached_dataset


def export(spec: dict[str, Any]) -> str:
    """Log the best trial's model from its checkpoint; return the model URI.

    A user's function has its checkpoint file logged on the best trial's run first; without
    ``model_fn`` (or a ``model`` in the checkpoint, or an input example) that file's URI is
    returned."""
    config, run = spec["config"], spec["config"]["run"]
    path = os.path.join(spec["checkpoint"], CHECKPOINT_FILE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    builtin = _is_builtin(run["fn"])
    logged = (
        None
        if builtin
        else log_checkpoint(spec["tracking_uri"], spec.get("trial_run_id") or spec["run_id"], path)
    )
    built = _builtin_model(run["fn"], config) if builtin else _own_model(run, config)
    saved = state["state"]
    example = saved.get("example_input", built[1] if built else None)
    if built is None or example is None or "model" not in saved:
        return logged or ""
    model, _, code = built
    model.load_state_dict(saved["model"])
    model.eval()
    return log_pytorch_model(
        spec["tracking_uri"],
        spec["run_id"],
        model,
        example.numpy() if isinstance(example, torch.Tensor) else example,
        registered_name=spec.get("register_as"),
        tags={"trial": spec.get("trial", ""), "checkpoint_epoch": str(state["epoch"])},
        code_paths=code,
    )


def _is_builtin(fn: Any) -> bool:
    return isinstance(fn, dict) and fn.get("_target_") == "trainables.train.train"


def _builtin_model(fn: dict[str, Any], config: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """The built-in model of the trial's hyperparameters, an example input, its code."""
    import trainables

    data = cached_dataset(fn["dataset"], fn["data"])
    model = build_model(fn["model"], data.input_shape, data.num_classes, TrialParams.from_config(config))
    return model, data.x_val[:2], [os.path.dirname(trainables.__file__)]


def _own_model(run: dict[str, Any], config: dict[str, Any]) -> tuple[Any, Any, list[str]] | None:
    """The user's ``model_fn(hp)`` (None without one), no example (the checkpoint has it), the
    code of its top-level package or module."""
    if not run.get("model_fn"):
        return None
    make = load_target(run["model_fn"], local_launch_dir(run))
    top = sys.modules[make.__module__.split(".")[0]]
    code = getattr(top, "__path__", None)
    return make(hyperparameters(config)), None, [list(code)[0] if code else top.__file__]


def warm_up(warm: dict[str, Any]) -> None:
    """Do now what an export would do first: import MLflow's torch flavour, open the store, load the data.

    Only a speed-up: whatever fails here fails again, with its message, in :func:`export`.
    """
    torch.set_num_threads(1)  # the sweep's last trials still train beside this process
    prepare_model_logging(warm["tracking_uri"])
    try:
        fn = warm["run"]["fn"]
        if _is_builtin(fn):
            cached_dataset(fn["dataset"], fn["data"])
    except Exception:  # noqa: BLE001, S110 - see the docstring
        pass


def serve(warm_path: str) -> int:
    """Warm up with WARM_PATH, then export the spec whose path arrives on stdin (none: exit 0)."""
    with open(warm_path) as f:
        warm_up(json.load(f))
    line = sys.stdin.readline().strip()
    if not line:
        return 0
    with open(line) as f:
        print(export(json.load(f)), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--serve":
        return serve(argv[1])
    with open(argv[0]) as f:
        print(export(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
