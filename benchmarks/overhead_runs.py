"""The two commands ``benchmarks.overhead`` compares with the orchestrator, run as subprocesses.

- ``python -m benchmarks.overhead_runs plain_ray --trials N --epochs E --dir D``: Ray Tune as its
  documentation teaches: ``Tuner`` + ``OptunaSearch`` + ``MLflowLoggerCallback``, Ray's defaults
  (``ray.init`` by Tune, default logger callbacks, ``reuse_actors`` default), running the project's
  train function (``orchestrator.entry.train``) with ``max_concurrent_trials=2``.
- ``python -m benchmarks.overhead_runs floor --trials N --epochs E --workers 2``: the same training
  (``trainables.trainer.Trainer``, one thread per process as a 1-CPU Ray trial) in a plain loop in
  ``workers`` processes: no search, no scheduler, no tracking, no checkpoints.

Both train the fixed configuration :data:`FIXED` (the default MLP on digits: 64-128-128-10, Adam,
batch 32); only ``lr`` is "searched", in a range too narrow to change the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from orchestrator.schema import SweepConfig
from orchestrator.trials import run_settings

#: The fixed hyperparameters every variant trains (the trainables' defaults, spelled out).
FIXED: dict[str, Any] = {
    "optimizer": "adam",
    "momentum": 0.9,
    "batch_size": 32,
    "hidden_layers": 2,
    "width": 128,
    "activation": "relu",
    "batch_norm": False,
    "dropout": 0.0,
    "weight_decay": 0.0,
    "l1": 0.0,
    "shuffle": True,
    "init": "default",
    "init_scale": 1.0,
}
LR_LOW, LR_HIGH, LR = 0.0009, 0.0011, 0.001
RUN = run_settings(SweepConfig(), os.getcwd())  # the built-in MLP on digits, as a sweep sets it


def plain_ray(trials: int, epochs: int, directory: str) -> None:
    """A Ray Tune sweep written the way Ray's documentation shows it."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.entry import train

    param_space = {**FIXED, "lr": tune.loguniform(LR_LOW, LR_HIGH), "epochs": epochs, "run": RUN}
    tuner = tune.Tuner(
        train,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            search_alg=OptunaSearch(),
            num_samples=trials,
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(
            name="plain_ray",
            storage_path=os.path.abspath(directory),
            callbacks=[
                MLflowLoggerCallback(
                    tracking_uri=f"sqlite:///{os.path.abspath(directory)}/mlflow.db",
                    experiment_name="plain_ray",
                )
            ],
        ),
    )
    results = tuner.fit()
    print("best val_acc", results.get_best_result().metrics["val_acc"])


_DATA: list[Any] = []


def _floor_trial(index: int, epochs: int) -> float:
    """Train one trial of :data:`FIXED` for ``epochs`` epochs; return its last val_acc."""
    import torch

    from trainables.data import load_dataset
    from trainables.hparams import TrialParams
    from trainables.seeding import derive_seed
    from trainables.trainer import Trainer

    torch.set_num_threads(1)  # as a 1-CPU Ray trial (trainables.train sets the same)
    if not _DATA:
        data = RUN["fn"]["data"]
        _DATA.append(load_dataset("digits", None, val_fraction=data["val_fraction"], split_seed=0))
    params = TrialParams.from_config({**FIXED, "lr": LR, "epochs": epochs})
    trainer = Trainer("mlp", _DATA[0], params, derive_seed(0, index, 0), "cpu")
    acc = float("nan")
    while trainer.epoch < epochs:
        acc = trainer.train_epoch().val_acc
    return acc


def floor(trials: int, epochs: int, workers: int) -> list[float]:
    """Run ``trials`` trials on ``workers`` processes (spawned, so each imports torch itself)."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_floor_trial, range(trials), [epochs] * trials))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead_runs", description=__doc__)
    parser.add_argument("variant", choices=("plain_ray", "floor"))
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default=".")
    args = parser.parse_args(argv)
    if args.variant == "plain_ray":
        plain_ray(args.trials, args.epochs, args.dir)
    else:
        accs = floor(args.trials, args.epochs, args.workers)
        print(f"floor: {len(accs)} trials, best val_acc {max(accs):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
