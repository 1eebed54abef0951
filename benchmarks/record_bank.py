"""Record a curve bank: train random configurations of a search space for real, several seeds each.

Usage::

    python -m benchmarks.record_bank --space benchmarks/spaces/mlp_wide.yaml --dataset mnist1d \\
        --configs 60 --seeds 3 --epochs 30 --out benchmarks/curves/mnist1d.jsonl.gz

Each configuration is drawn at random from the ``hparams`` of ``--space`` (a file in the format of
``conf/trainable/*.yaml``: fixed values and ``{type: loguniform|uniform|int|choice, ...}``
distributions, parsed by the product's ``orchestrator.space.parse_space``), with a ``numpy``
Generator seeded by ``--seed``; then each of its ``--seeds`` seeds is trained with the product's own
``trainables.trainer.Trainer`` on the CPU, one thread, for ``--epochs`` epochs, and every epoch's
metric contract is written in the bank format of ``benchmarks/curves/README.md`` (``epoch_time``:
the epoch's wall-clock seconds, evaluation included). A run whose validation loss stops being
finite ends there (``stopped_on_nonfinite``), its non-finite values written as ``null``. The
weight seed of seed index ``k`` of configuration ``i`` is ``derive_seed(--seed, "bank-<i>", k)``,
so a bank can be recorded again run for run (epoch times aside).

The replay benchmark reads any such file (``python -m benchmarks.replay --bank FILE``): a bank
recorded on a dataset the schedulers were never tuned on is a held-out check of their settings.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.space import Dist, parse_space

SERIES = ("train_loss", "val_loss", "val_acc", "grad_norm", "dead_frac", "epoch_time")


def sample(dist: Dist, rng: np.random.Generator) -> Any:
    """Draw one value of ``dist`` as random search would (log-uniform in log space)."""
    if dist.type == "choice":
        return dist.values[int(rng.integers(len(dist.values)))]
    low, high = float(dist.low), float(dist.high)  # type: ignore[arg-type]
    if dist.type == "int":
        step = int(dist.step or 1)
        return int(low) + step * int(rng.integers((int(high) - int(low)) // step + 1))
    if dist.log:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def draw_configs(hparams: dict[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` configurations of the space ``hparams``: fixed values plus one draw of each searched one."""
    space = parse_space(hparams, prefix="hparams")
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(count):
        drawn = {name: sample(dist, rng) for name, dist in sorted(space.searched.items())}
        configs.append({**space.fixed, **drawn})
    return configs


def config_id(config: dict[str, Any]) -> str:
    """A stable id of a configuration: the first 10 hex digits of the SHA-256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@functools.lru_cache(maxsize=2)
def _dataset(name: str) -> Any:
    from trainables.data import load_dataset

    return load_dataset(name, None)


def _train(model: str, dataset: str, config: dict[str, Any], seed: int) -> tuple[dict[str, list], bool]:
    """Train one run; return its per-epoch series and whether it stopped on a non-finite loss."""
    import torch

    from orchestrator.watch import Watch
    from trainables.hparams import TrialParams
    from trainables.trainer import Trainer

    params = TrialParams.from_config(config)
    trainer = Trainer(model, _dataset(dataset), params, seed, torch.device("cpu"))
    watch = Watch(trainer.model, trainer.optimizer)  # the diagnostics, measured as in a sweep
    series: dict[str, list[float | None]] = {name: [] for name in SERIES}
    while trainer.epoch < params.epochs:
        started = time.perf_counter()
        m = trainer.train_epoch()
        elapsed = time.perf_counter() - started
        seen = watch.take()
        values = (m.train_loss, m.val_loss, m.val_acc, seen.get("grad_norm"), seen.get("dead_frac"), elapsed)
        for name, value in zip(SERIES, values, strict=True):
            series[name].append(_finite_or_none(value))
        if not math.isfinite(m.val_loss):
            return series, True
    return series, False


def train_run(job: tuple[str, str, dict[str, Any], int, int, int]) -> dict[str, Any]:
    """Train one (configuration, seed index) for its epochs and return its bank record."""
    import torch

    from trainables.seeding import derive_seed

    model, dataset, config, index, seed_index, bank_seed = job
    seed = derive_seed(bank_seed, f"bank-{index}", seed_index)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every run timed alike; restored for a caller that trains in-process
    try:
        series, stopped = _train(model, dataset, config, seed)
    finally:
        torch.set_num_threads(threads)
    return {
        "dataset": f"{dataset} ({model})",
        "config_id": config_id(config),
        "config": config,
        "seed": seed_index,
        "epochs": int(config["epochs"]),
        **series,
        "stopped_on_nonfinite": stopped,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.record_bank", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--space", required=True, help="a YAML file with an 'hparams' mapping")
    parser.add_argument(
        "--dataset", default="mnist1d", help="digits, mnist1d or spirals (nothing is downloaded)"
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--configs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (restarts replay them)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="seeds the configurations and the weight seeds")
    parser.add_argument("--jobs", type=int, default=1, help="processes training at once (1: this one)")
    parser.add_argument("--out", required=True, help="the bank file to write (.jsonl.gz)")
    args = parser.parse_args(argv)
    for name in ("configs", "seeds", "epochs", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be >= 1, got {getattr(args, name)}")
    if not args.out.endswith(".jsonl.gz"):
        parser.error(f"--out: must end with .jsonl.gz, got {args.out!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        document = yaml.safe_load(Path(args.space).read_text(encoding="utf-8"))
        hparams = (document or {}).get("hparams")
        if not isinstance(hparams, dict):
            raise ValueError("no 'hparams' mapping")
        configs = draw_configs({**hparams, "epochs": args.epochs}, args.configs, args.seed)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: --space {args.space}: {exc}", file=sys.stderr)
        return 2
    jobs = [
        (args.model, args.dataset, config, i, s, args.seed)
        for i, config in enumerate(configs)
        for s in range(args.seeds)
    ]
    started = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    # Worker processes are spawned: a forked child of a process that already ran autograd fails.
    pool = (
        ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        if args.jobs > 1
        else None
    )
    try:
        records = pool.map(train_run, jobs, chunksize=1) if pool else map(train_run, jobs)
        with gzip.open(partial, "wt", encoding="utf-8") as f:
            for done, record in enumerate(records, start=1):
                f.write(json.dumps(record) + "\n")
                if done % max(1, len(jobs) // 20) == 0 or done == len(jobs):
                    print(f"{done}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    partial.replace(out)
    print(f"wrote {out}: {args.configs} configurations x {args.seeds} seeds x {args.epochs} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
