"""Replay recorded learning curves through hyperparameter-search schedulers, without training.

Usage::

    python -m benchmarks.replay [--bank FILE.jsonl.gz ...] [--schedulers asha,hyperband,...]
        [--workers 4] [--repeats 20] [--trials N] [--seed S] [--json PATH] [--quick]

Every repeat proposes the configurations in a random order (``numpy`` Generator seeded with
``(seed, repeat)``; the same order for every scheduler, so they compare on equal terms), at most
``--trials`` of them, to a simulated cluster of ``--workers`` workers where an epoch costs its
recorded seconds. Ray's schedulers run unmodified behind ``SimController``
(``benchmarks/replay_sim.py``), Optuna's pruners in an ask/tell study (``benchmarks/optuna_sim.py``);
figures are defined in ``benchmarks/metrics.py``, the regret over time in ``benchmarks/regret.py``
and ``gap_closed`` (the share of ASHA's gap to the ``oracle`` bound a scheduler closes) in
``benchmarks/oracle.py``. One table per bank is printed; ``--json`` holds ``JSON_KEYS`` first.

``--trials`` defaults to ``min(configs in the bank, 200)``: Ray's ``MedianStoppingRule`` scans every
trial's whole history on each result, so a 1000-configuration LCBench repeat takes ~30 s with it
(~1 s at 200); pass ``--trials 1000`` for all. ``--quick`` means 3 repeats of 100 trials.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import schedulers as registry
from benchmarks.bank import Bank, default_bank_paths, load_bank
from benchmarks.metrics import BASELINE, TARGET_TOLERANCE, RepeatStats, summarize
from benchmarks.optuna_sim import replay_optuna
from benchmarks.oracle import gap_closed
from benchmarks.regret import HORIZON_FALLBACK, regret_figures
from benchmarks.replay_sim import replay_ray
from benchmarks.report import LEGEND, format_table

logger = logging.getLogger(__name__)

DEFAULT_TRIAL_CAP = 200
QUICK_REPEATS, QUICK_TRIALS = 3, 100
JSON_KEYS = (
    "epochs",
    "sim_time",
    "best_final_acc",
    "compute_to_target",
    "restarts",
    "restarts_helped",
    "best_config_pruned_frac",
    "regret_mean",
    "regret_ci",
    "gap_closed",
    "reached_target",
    "restart_epochs_frac",
    "rescued_frac",
)


def config_order(n_configs: int, n_trials: int, seed: int, repeat: int) -> list[int]:
    """Return the configurations proposed in ``repeat``: a seeded permutation, cut to ``n_trials``."""
    rng = np.random.default_rng([seed, repeat])
    return rng.permutation(n_configs)[:n_trials].tolist()


def n_trials_for(bank: Bank, trials: int | None) -> int:
    """Return the trials per repeat: ``trials`` (or the default cap), at most the bank's configs."""
    return min(len(bank.configs), trials if trials is not None else DEFAULT_TRIAL_CAP)


def replay_repeats(
    spec: registry.SchedulerSpec,
    bank: Bank,
    n_trials: int,
    workers: int,
    repeats: int,
    seed: int,
    max_pending: int,
) -> list[RepeatStats]:
    """Replay ``repeats`` searches of ``bank`` with a fresh scheduler from ``spec`` each."""
    stats = []
    for repeat in range(repeats):
        order = config_order(len(bank.configs), n_trials, seed, repeat)
        scheduler = spec.make(bank, len(order))
        if spec.kind == "optuna":
            stats.append(replay_optuna(scheduler, bank, order, workers, seed=seed * 10_007 + repeat))
        else:
            stats.append(replay_ray(scheduler, bank, order, workers, max_pending))
    return stats


@functools.lru_cache(maxsize=16)
def _cached_bank(path: str) -> Bank:
    return load_bank(path)


def _cell(path: str, name: str, options: dict[str, int]) -> list[RepeatStats]:
    """Replay one (bank, scheduler) cell; runs in a worker process with ``--jobs`` > 1."""
    quiet_ray_info()
    bank = _cached_bank(path)
    return replay_repeats(registry.SCHEDULERS[name], bank, **options)


def quiet_ray_info() -> None:
    """Hide Ray HyperBand's per-bracket INFO line ("Bracket too small - Retrying..."), and the
    convergence scheduler's warning that a restart repeats its first attempt: on a bank with one
    seed per configuration a replayed restart follows the same curve, as it must."""
    logging.getLogger("ray.tune.schedulers.hyperband").setLevel(logging.WARNING)
    logging.getLogger("orchestrator.scheduler").setLevel(logging.ERROR)


def run_bank(
    bank: Bank,
    specs: Sequence[registry.SchedulerSpec],
    options: dict[str, int],
    pool: ProcessPoolExecutor | None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Return the summary of each scheduler on ``bank`` and notes on schedulers that failed.

    The figures that compare schedulers (regret over a horizon set by ``asha``, ``gap_closed``
    against ``asha`` and ``oracle``) are added once every scheduler has run.
    """
    futures = {s.name: pool.submit(_cell, str(bank.path), s.name, options) for s in specs} if pool else {}
    stats: dict[str, list[RepeatStats]] = {}
    notes = []
    for spec in specs:
        try:
            if pool:
                stats[spec.name] = futures[spec.name].result()
            else:
                stats[spec.name] = _cell(str(bank.path), spec.name, options)
        except Exception as exc:
            if not spec.name.startswith("convergence"):
                raise
            logger.exception("%s failed on %s", spec.name, bank.name)
            notes.append(f"{spec.name} failed: {type(exc).__name__}: {exc}")
    summaries = {name: summarize(repeats) for name, repeats in stats.items()}
    for name, figures in regret_figures(stats, bank).items():
        summaries[name].update(figures)
    for name, summary in summaries.items():
        summary["gap_closed"] = gap_closed(summaries, name)
    return summaries, notes


def stranded_notes(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Return a note for each scheduler that left trials PAUSED/PENDING with nothing running."""
    return [
        f"{name}: {summary['stranded']:.1f} trials/repeat stranded (paused or pending, never resumed)"
        for name, summary in summaries.items()
        if summary["stranded"]
    ]


def bank_title(
    bank: Bank, n_trials: int, options: dict[str, int], summaries: dict[str, dict[str, Any]] | None = None
) -> str:
    """Return the heading of a bank's table: its size, the replay settings, the regret horizon."""
    capped = " (capped; --trials N to change)" if n_trials < len(bank.configs) else ""
    fallback = HORIZON_FALLBACK in {s.get("regret_horizon") for s in (summaries or {}).values()}
    horizon = f"; regret horizon: the {HORIZON_FALLBACK} ({BASELINE} not run)" if fallback else ""
    return (
        f"== {bank.name}: {len(bank.configs)} configs x {bank.n_seeds_max} seed(s), "
        f"{bank.max_epochs} epochs; "
        f"{n_trials} trials/repeat{capped}, {options['workers']} workers, {options['repeats']} repeats; "
        f"target val_acc >= {bank.target:.4f} - {TARGET_TOLERANCE}{horizon} =="
    )


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def to_json(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Return ``{bank: {scheduler: figures}}`` with the required keys first; non-finite -> null."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for bank, per_scheduler in results.items():
        out[bank] = {}
        for name, summary in per_scheduler.items():
            ordered = {key: summary[key] for key in JSON_KEYS}
            ordered.update({k: v for k, v in summary.items() if k not in ordered})
            out[bank][name] = {k: _json_ready(v) for k, v in ordered.items()}
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", action="append", type=Path, help="bank file (repeatable); default: all")
    parser.add_argument("--schedulers", help=f"comma-separated, from: {','.join(registry.SCHEDULERS)}")
    parser.add_argument("--workers", type=int, default=4, help="simulated concurrent trials (4)")
    parser.add_argument("--repeats", type=int, help="repeats per (bank, scheduler) (20; --quick: 3)")
    parser.add_argument("--trials", type=int, help=f"configs per repeat (min(all, {DEFAULT_TRIAL_CAP}))")
    parser.add_argument("--seed", type=int, default=0, help="seed of the configuration orders (0)")
    parser.add_argument("--json", type=Path, help="write {bank: {scheduler: figures}} here")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 100 trials")
    parser.add_argument("--max-pending", type=int, help="PENDING trials Tune keeps (default: --workers)")
    parser.add_argument("--jobs", type=int, default=1, help="processes running (bank, scheduler) cells (1)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else 20
    if args.trials is None and args.quick:
        args.trials = QUICK_TRIALS
    for name in ("workers", "repeats", "trials", "max_pending", "jobs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the replay and print one table per bank; return the exit status."""
    args = parse_args(argv)
    quiet_ray_info()
    specs, notes = registry.resolve(args.schedulers.split(",") if args.schedulers else None)
    paths = args.bank or default_bank_paths()
    if not paths:
        print("no bank files found", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    pool = ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else None
    try:
        for path in paths:
            bank = _cached_bank(str(path))
            n_trials = n_trials_for(bank, args.trials)
            options = {
                "n_trials": n_trials,
                "workers": args.workers,
                "repeats": args.repeats,
                "seed": args.seed,
                "max_pending": args.max_pending or args.workers,
            }
            bank_started = time.perf_counter()
            summaries, bank_notes = run_bank(bank, specs, options, pool)
            results[bank.name] = summaries
            bank_notes = notes + bank_notes + stranded_notes(summaries)
            bank_notes.append(f"replayed in {time.perf_counter() - bank_started:.1f} s")
            print(
                format_table(bank_title(bank, n_trials, options, summaries), summaries, bank_notes),
                end="\n\n",
                flush=True,
            )
    finally:
        if pool:
            pool.shutdown()
    print(LEGEND)
    print(f"total {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
