"""Log the best trial's model to MLflow: ``python -m orchestrator.export SPEC.json``.

The sweep runs this in a subprocess, so the driver itself never imports torch. SPEC holds
the checkpoint directory, the trial's config (hyperparameters and its ``run`` settings), the
tracking URI, the run to log into and an optional registered model name. The checkpoint
loads with ``weights_only=True``.

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

from orchestrator.tracking import log_pytorch_model, prepare_model_logging
from trainables.hparams import TrialParams
from trainables.models import build_model
from trainables.train import CHECKPOINT_FILE, cached_dataset


def export(spec: dict[str, Any]) -> str:
    """Rebuild the model of ``spec["config"]`` from its checkpoint and log it; return the model URI."""
    config, run = spec["config"], spec["config"]["run"]
    data = cached_dataset(run)
    model = build_model(run["model"], data.input_shape, data.num_classes, TrialParams.from_config(config))
    state = torch.load(
        os.path.join(spec["checkpoint"], CHECKPOINT_FILE), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state["model"])
    model.eval()
    example = data.x_val[:2]
    return log_pytorch_model(
        spec["tracking_uri"],
        spec["run_id"],
        model,
        example,
        registered_name=spec.get("register_as"),
        tags={"trial": spec.get("trial", ""), "checkpoint_epoch": str(state["epoch"])},
    )


def warm_up(warm: dict[str, Any]) -> None:
    """Do now what an export would do first: import MLflow's torch flavour, open the store, load the data.

    Only a speed-up: whatever fails here fails again, with its message, in :func:`export`.
    """
    torch.set_num_threads(1)  # the sweep's last trials still train beside this process
    prepare_model_logging(warm["tracking_uri"])
    try:
        cached_dataset(warm["run"])
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
