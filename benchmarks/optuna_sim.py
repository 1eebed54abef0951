"""Replay recorded curves through an Optuna pruner on the same simulated cluster as the Ray replay.

An in-memory study (``direction="maximize"``) runs ``workers`` trials at once with the ask/tell
interface: when a worker is free, ``study.ask()`` opens a trial for the next configuration of the
repeat's random order (Optuna's sampler proposes nothing; the trial number maps to the
configuration); after each epoch ``trial.report(val_acc, epoch)`` then ``trial.should_prune()``;
a pruned trial is told ``PRUNED`` and frees its worker, one that reaches its budget is told
``COMPLETE`` with its final ``val_acc``. Optuna pruners never pause or restart, so every trial
replays its seed-0 curve once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from benchmarks.bank import Bank, Run
from benchmarks.metrics import Recorder, RepeatStats


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines while replaying, restoring the previous verbosity."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


@dataclass
class _Slot:
    trial: optuna.Trial
    key: str
    run: Run
    epoch: int = 0


def replay_optuna(
    pruner: optuna.pruners.BasePruner, bank: Bank, order: Sequence[int], workers: int, seed: int
) -> RepeatStats:
    """Replay the configurations ``order`` of ``bank`` through ``pruner``; return the figures."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers=}")
    recorder = Recorder(bank)
    queue = deque(order)
    events: list[tuple[float, int, _Slot]] = []
    seq = itertools.count()
    with quiet_optuna():
        study = optuna.create_study(
            study_name=f"replay-{bank.name}-{seed}",
            direction="maximize",
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )

        def start(now: float) -> None:
            config_index = queue.popleft()
            curves = bank.configs[config_index]
            trial = study.ask()
            key = f"{trial.number:05d}_{curves.config_id}"
            recorder.proposed(key, config_index)
            slot = _Slot(trial=trial, key=key, run=curves.run_for_attempt(0))
            heapq.heappush(events, (now + slot.run.epoch_time[0], next(seq), slot))

        for _ in range(min(workers, len(queue))):
            start(0.0)
        while events:
            now, _, slot = heapq.heappop(events)
            if _end_epoch(study, slot, now, recorder):
                heapq.heappush(events, (now + slot.run.epoch_time[slot.epoch], next(seq), slot))
            elif queue:
                start(now)
    return recorder.finish()


def _end_epoch(study: optuna.Study, slot: _Slot, now: float, recorder: Recorder) -> bool:
    """Report the epoch just replayed; return whether the trial goes on to another epoch."""
    slot.epoch += 1
    value = slot.run.val_acc[slot.epoch - 1]
    recorder.epoch(now, slot.key, slot.epoch, slot.run.budget, value)
    slot.trial.report(value, slot.epoch)
    if slot.epoch >= slot.run.budget:
        study.tell(slot.trial, value)
        return False
    if slot.trial.should_prune():
        study.tell(slot.trial, state=TrialState.PRUNED)
        return False
    return True
