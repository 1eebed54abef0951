"""How much a curve bank's outcomes depend on the weight-initialisation seed.

A configuration is *seed-dependent* when some seed ends within ``NEAR_BEST`` (0.02) of the
configuration's best seed while another seed ends more than ``FAR_BELOW`` (0.1) below it. A run
ends at its final ``val_acc``: the last finite value of its curve (``Run.final_acc`` under the NaN
policy of :mod:`benchmarks.bank`: carried forward past a non-finite loss, the bank's floor when the
run never had one). Such a configuration is what a restart with fresh weights can rescue; a bank
with one seed per configuration (LCBench) has none.

Usage::

    python -m benchmarks.seeds benchmarks/curves/*.jsonl.gz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.bank import Bank, load_bank
from benchmarks.metrics import TARGET_TOLERANCE

NEAR_BEST = 0.02  # a seed this close to the configuration's best seed got the good outcome
FAR_BELOW = 0.1  # a seed more than this below the best seed got a bad one


@dataclass(frozen=True)
class SeedFigures:
    """The seed figures of one bank.

    Attributes:
        name: The bank's name.
        configs: Configurations in the bank.
        seeds_min: The fewest seeds any configuration has.
        seeds_max: The most seeds any configuration has.
        seed_dependent: Configurations whose outcome depends on the seed (:func:`seed_dependent`).
        near_best: Configurations whose best seed ends within ``TARGET_TOLERANCE`` of the bank's
            best final over every run.
        best: The bank's best final ``val_acc`` over every run.
    """

    name: str
    configs: int
    seeds_min: int
    seeds_max: int
    seed_dependent: int
    near_best: int
    best: float

    @property
    def seed_dependent_share(self) -> float:
        """The share of configurations whose outcome depends on the seed."""
        return self.seed_dependent / self.configs

    @property
    def near_best_share(self) -> float:
        """The share of configurations whose best seed ends near the bank's best."""
        return self.near_best / self.configs


def seed_dependent(finals: Sequence[float], near: float = NEAR_BEST, far: float = FAR_BELOW) -> bool:
    """Some seed ends within ``near`` of the best seed and another more than ``far`` below it.

    ``finals`` are the seeds' final accuracies, all finite. The best seed itself is within
    ``near`` of itself, so this holds exactly when the seeds' finals span more than ``far``;
    one seed alone never depends on the seed.
    """
    if near < 0 or far <= near:
        raise ValueError(f"seed_dependent: needs 0 <= near < far, got {near=}, {far=}")
    values = np.asarray(finals, dtype=float)
    if values.size < 2:
        return False
    best = values.max()
    return bool((values >= best - near).any() and (values < best - far).any())


def seed_figures(bank: Bank) -> SeedFigures:
    """Count the seed-dependent configurations of ``bank`` and those that end near its best."""
    finals = [np.array([run.final_acc for run in c.runs]) for c in bank.configs]
    best = max(float(f.max()) for f in finals)
    seeds = [f.size for f in finals]
    return SeedFigures(
        name=bank.name,
        configs=len(finals),
        seeds_min=min(seeds),
        seeds_max=max(seeds),
        seed_dependent=sum(seed_dependent(f) for f in finals),
        near_best=sum(float(f.max()) >= best - TARGET_TOLERANCE for f in finals),
        best=best,
    )


def format_table(figures: Sequence[SeedFigures]) -> str:
    """One line per bank: configurations, seeds per configuration and the two shares."""
    header = f"{'bank':<24} {'configs':>7} {'seeds':>5} {'seed-dependent':>16} {'near best':>14} {'best':>6}"
    lines = [header]
    for f in figures:
        seeds = str(f.seeds_max) if f.seeds_min == f.seeds_max else f"{f.seeds_min}-{f.seeds_max}"
        dependent = f"{f.seed_dependent_share:.3f} ({f.seed_dependent})"
        near = f"{f.near_best_share:.3f} ({f.near_best})"
        lines.append(f"{f.name:<24} {f.configs:>7} {seeds:>5} {dependent:>16} {near:>14} {f.best:>6.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.seeds", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("banks", nargs="+", help="bank files (.jsonl.gz)")
    args = parser.parse_args(argv)
    try:
        figures = [seed_figures(load_bank(Path(path))) for path in args.banks]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(figures))
    print(
        f"seed-dependent: some seed within {NEAR_BEST} of the configuration's best seed, another more than "
        f"{FAR_BELOW} below it; near best: the best seed within {TARGET_TOLERANCE} of the bank's best"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
