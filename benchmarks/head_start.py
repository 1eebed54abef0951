"""Where a scheduler's time to target goes: how soon the configurations that reach it start.

Usage::

    python -m benchmarks.head_start [--bank FILE.jsonl.gz ...] [--schedulers asha,convergence,oracle]
        [--workers 4] [--repeats 20] [--trials N] [--seed S]

The replay (``benchmarks/replay.py``) gives the time to target; this splits it. A *hitter* is a
configuration whose seed-0 run reaches the target (``benchmarks.oracle.hitters``); a hitter's run
itself costs about the same under every scheduler that does not cut it, so what a scheduler
changes is when the first hitter of the repeat's order *starts*: the workers are busy until then
with the configurations proposed before it. Per scheduler (medians over the repeats reaching the
target): ``t_target``; ``hit_start``, when the trial that first reached it started;
``first_start``, when the first hitter of the order started; ``work_first4`` and ``work_others``,
the simulated worker-seconds of the epochs that ended before ``first_start``, on the first four
trials of the order and on the others (the oracle spends one epoch on each; an epoch still
running at ``first_start`` is not counted, so with several workers these are lower bounds).
Same orders and settings as the replay.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ray.tune.experiment import Trial

from benchmarks import schedulers as registry
from benchmarks.bank import Bank, default_bank_paths, load_bank
from benchmarks.oracle import hitters
from benchmarks.replay import config_order, n_trials_for, quiet_ray_info
from benchmarks.replay_sim import SimController

FIRST = 4  # "the first trials": as many as the default simulated workers
COLUMNS = ("t_target", "hit_start", "first_start", "work_first4", "work_others")


class TimingController(SimController):
    """``SimController`` that also notes when each trial first starts and the work before the
    first hitter starts."""

    def __init__(self, *args: object, hitting: set[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hitting = hitting
        self.started: dict[str, float] = {}
        self.first_start: float | None = None
        self.work: Counter[int] = Counter()  # order position -> worker-seconds before first_start
        self.hit: tuple[str, float] | None = None  # the trial that first reached the target, when

    def _start(self, trial: Trial) -> None:
        self.started.setdefault(trial.trial_id, self.now)
        if self.first_start is None and trial.config["config_id"] in self.hitting:
            self.first_start = self.now
        super()._start(trial)

    def _end_epoch(self, trial: Trial) -> None:
        rep = self._replay[trial]
        if self.first_start is None:
            self.work[int(trial.trial_id[:5])] += rep.run.epoch_time[rep.epoch]
        super()._end_epoch(trial)
        if self.hit is None and self.recorder.time_to_target is not None:
            self.hit = (trial.trial_id, self.now)


@dataclass(frozen=True)
class HeadStart:
    """One repeat's split of its time to target (see the module docstring)."""

    t_target: float
    hit_start: float
    first_start: float
    work_first4: float
    work_others: float


def head_start(name: str, bank: Bank, order: Sequence[int], workers: int) -> HeadStart | None:
    """Replay ``order`` of ``bank`` through scheduler ``name``; None if it never reaches the target."""
    scheduler = registry.SCHEDULERS[name].make(bank, len(order))
    controller = TimingController(scheduler, bank, order, workers, workers, hitting=hitters(bank))
    controller.run()
    if controller.hit is None or controller.first_start is None:
        return None
    trial_id, when = controller.hit
    work = controller.work
    return HeadStart(
        t_target=when,
        hit_start=controller.started[trial_id],
        first_start=controller.first_start,
        work_first4=sum(v for i, v in work.items() if i < FIRST),
        work_others=sum(v for i, v in work.items() if i >= FIRST),
    )


def bank_rows(bank: Bank, names: Sequence[str], args: argparse.Namespace) -> list[str]:
    """The table of one bank: a line per scheduler, medians over the repeats reaching the target."""
    n_trials = n_trials_for(bank, args.trials)
    lines = [
        f"== {bank.name}: {len(hitters(bank))} of {len(bank.configs)} configurations reach the target =="
    ]
    lines.append(f"{'scheduler':<22}{'reached':>8}" + "".join(f"{c:>13}" for c in COLUMNS))
    for name in names:
        splits = [
            split
            for repeat in range(args.repeats)
            if (
                split := head_start(
                    name, bank, config_order(len(bank.configs), n_trials, args.seed, repeat), args.workers
                )
            )
        ]
        cells = [
            statistics.median(getattr(s, c) for s in splits) if splits else float("nan") for c in COLUMNS
        ]
        lines.append(f"{name:<22}{len(splits):>5}/{args.repeats:<2}" + "".join(f"{v:>13.4g}" for v in cells))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the split of the time to target per bank and scheduler."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.head_start", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--bank", action="append", help="bank file (repeatable); default: all")
    parser.add_argument(
        "--schedulers", default="asha,convergence,oracle", help="comma-separated (asha,convergence,oracle)"
    )
    parser.add_argument("--workers", type=int, default=FIRST, help=f"simulated concurrent trials ({FIRST})")
    parser.add_argument("--repeats", type=int, default=20, help="repeats per bank (20)")
    parser.add_argument("--trials", type=int, help="configs per repeat (as the replay)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the configuration orders (0)")
    args = parser.parse_args(argv)
    names = args.schedulers.split(",")
    if unknown := [n for n in names if n not in registry.SCHEDULERS]:
        parser.error(f"unknown scheduler(s): {', '.join(unknown)}")
    quiet_ray_info()
    for path in args.bank or default_bank_paths():
        print("\n".join(bank_rows(load_bank(path), names, args)), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
