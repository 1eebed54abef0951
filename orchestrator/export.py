"""Log the best trial's model to MLflow: ``python -m orchestrator.export SPEC.json``.

The sweep runs this in a short-lived subprocess at its end, so the driver itself never
imports torch. SPEC holds the checkpoint directory, the trial's config (hyperparameters and
its ``run`` settings), the tracking URI, the run to log into and an optional registered
model name. The checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch

from orchestrator.tracking import log_pytorch_model
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


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        print(export(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
