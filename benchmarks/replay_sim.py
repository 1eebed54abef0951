"""Replay recorded curves through an unmodified Ray ``TrialScheduler`` on a simulated cluster.

``SimController`` stands in for Ray Tune's ``TuneController`` in one process, without
``ray.init``: it owns real ``ray.tune.experiment.Trial`` objects (``stub=True``) and calls the
scheduler hooks in the order ``TuneController`` does (``ray/tune/execution/tune_controller.py``):

- A search-algorithm stand-in adds trials in the repeat's random configuration order, keeping at
  most ``max_pending`` PENDING (``TUNE_MAX_PENDING_TRIALS_PG``); each add calls ``on_trial_add``.
- Whenever a worker is free, ``choose_trial_to_run`` picks a PENDING or PAUSED trial; if it
  returns ``None``, the oldest PENDING trial starts anyway (Tune's ``_maybe_add_actors`` also
  starts queued PENDING trials on free resources).
- Each epoch costs its recorded ``epoch_time``; when it ends, ``on_trial_result`` gets the result
  and its decision is executed: CONTINUE trains the next epoch, or, at the run's budget, ends the
  trial like a function trainable that returns (``done`` -> ``stop_trial`` -> ``on_trial_complete``);
  PAUSE pauses it (progress kept, as from a checkpoint); STOP calls ``stop_trial``
  (``on_trial_complete`` for a RUNNING trial, ``on_trial_remove`` for a PENDING/PAUSED one); NOOP
  leaves the trial as the scheduler left it. A trial the scheduler paused or stopped itself frees
  its worker; one left RUNNING after NOOP would hang Tune and raises here.
- Restarts: a trial whose ``config["attempt"]`` differs from the attempt being replayed when it
  starts again (the scheduler paused it without a checkpoint and set a new config, as PBT and our
  ``ConvergenceScheduler`` do) starts attempt ``k`` from epoch 1 on the curve of its
  ``k % n_seeds``-th seed; ``training_iteration`` and ``time_total_s`` restart with it. Changed
  hyperparameters in the new config cannot be replayed (the curve stays the configuration's).
- Pause and resume: a PAUSED trial that starts again in the same attempt resumes at the epoch
  after the last one it reported (as from a checkpoint): its curve continues and no epoch is
  replayed or counted twice; every result says it came with a checkpoint (``should_checkpoint``,
  as Ray marks one). ``search_alg.searcher`` is a ``FixedOrderSearcher``: the
  ``on_pause``/``on_unpause`` calls ``HyperBandForBOHB`` makes to its searcher change nothing.
- When nothing can run any more, trials still PAUSED or PENDING are "stranded" (Tune would wait
  forever); they are stopped through ``stop_trial`` and counted.

For speed, results are stored with ``trial.run_metadata.last_result = result`` rather than
``Trial.update_last_result`` (which also keeps per-metric running statistics for reporting, ~60 us
a call, which Ray's schedulers never read).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from benchmarks.bank import Bank, ConfigCurves, Run
from benchmarks.metrics import Recorder, RepeatStats

METRIC, MODE = "val_acc", "max"
_LIVE_WAITING = (Trial.PENDING, Trial.PAUSED)


@dataclass
class _Replay:
    """What the simulated worker of one trial is replaying."""

    curves: ConfigCurves
    run: Run
    attempt: int = 0
    epoch: int = 0  # epochs completed in the current attempt
    elapsed: float = 0.0  # time_total_s of the current attempt
    token: int = 0  # bumps on every start/release; stale epoch events are ignored


class FixedOrderSearcher:
    """The searcher behind ``SimController.search_alg``: the repeat's fixed configuration order.

    ``HyperBandForBOHB`` tells its searcher which trials it pauses and resumes (``TuneBOHB``
    uses that to count running trials); the order here depends on neither, so both do nothing.
    """

    def on_pause(self, trial_id: str) -> None:
        """Ignore a paused trial: the order of the next configurations stays the same."""

    def on_unpause(self, trial_id: str) -> None:
        """Ignore a resumed trial: the order of the next configurations stays the same."""


@dataclass(frozen=True)
class FixedOrderSearch:
    """The search algorithm stand-in (Tune's ``SearchGenerator``): it holds the searcher, and
    says when no configuration is left to propose (``is_finished``)."""

    searcher: FixedOrderSearcher
    remaining: Callable[[], int]

    def is_finished(self) -> bool:
        """True once every configuration of the repeat's order was proposed."""
        return self.remaining() == 0


class SimController:
    """Simulated ``TuneController``: the calls Ray's schedulers make, on a cluster of ``workers``.

    Args:
        scheduler: An unmodified Ray ``TrialScheduler``; ``set_search_properties`` is called here.
        bank: The curves to replay.
        order: Indices into ``bank.configs``, in the order configurations are proposed.
        workers: Number of concurrent trials.
        max_pending: Most PENDING trials at a time (Tune's ``TUNE_MAX_PENDING_TRIALS_PG``).
        recorder: Collects the figures; a new one when ``None``.
    """

    def __init__(
        self,
        scheduler: TrialScheduler,
        bank: Bank,
        order: Sequence[int],
        workers: int,
        max_pending: int,
        recorder: Recorder | None = None,
    ) -> None:
        if workers < 1 or max_pending < 1:
            raise ValueError(f"workers and max_pending must be >= 1, got {workers=}, {max_pending=}")
        self.scheduler = scheduler
        self.bank = bank
        self._order = deque(order)
        self.search_alg = FixedOrderSearch(FixedOrderSearcher(), lambda: len(self._order))
        self.recorder = recorder or Recorder(bank)
        self._free = workers
        self._max_pending = max_pending
        self._trials: list[Trial] = []
        self._live: set[Trial] = set()
        self._pending: deque[Trial] = deque()  # FIFO of trials added PENDING (lazily cleaned)
        self._n_pending = 0
        self._replay: dict[Trial, _Replay] = {}
        self._events: list[tuple[float, int, Trial, int]] = []
        self._seq = itertools.count()
        self.now = 0.0
        scheduler.set_search_properties(METRIC, MODE)

    # --- the controller API that schedulers call -------------------------------------------------

    def get_trials(self) -> list[Trial]:
        """Return all trials, in the order they were added."""
        return self._trials

    def get_live_trials(self) -> set[Trial]:
        """Return the trials not TERMINATED or ERROR."""
        return self._live

    def get_trial(self, trial_id: str) -> Trial | None:
        """Return the trial with ``trial_id``, or ``None``."""
        return next((t for t in self._trials if t.trial_id == trial_id), None)

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        """Pause a RUNNING trial and free its worker; like Tune, ignore any other trial.

        The replay keeps the trial's progress either way: whether it resumes or restarts is
        decided by its ``config["attempt"]`` when it starts again.
        """
        if trial.status != Trial.RUNNING:
            return
        self._release(trial)
        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial: Trial) -> None:
        """Stop a trial the way ``TuneController.stop_trial`` does and free its worker if it had one.

        PENDING/PAUSED -> ``on_trial_remove``; RUNNING -> ``on_trial_complete`` with its last result.
        """
        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        if trial.status in _LIVE_WAITING:
            self._n_pending -= trial.status == Trial.PENDING
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        if trial.status == Trial.RUNNING:
            self._release(trial)
        trial.set_status(Trial.TERMINATED)
        self._live.discard(trial)

    # --- the simulation ------------------------------------------------------------------------

    def run(self) -> RepeatStats:
        """Run the event loop until no trial can run, then return the repeat's figures."""
        while True:
            self._fill_workers()
            if not self._events:
                break
            when, _, trial, token = heapq.heappop(self._events)
            if token == self._replay[trial].token:
                self.now = when
                self._end_epoch(trial)
        self._strand_leftovers()
        return self.recorder.finish()

    def _top_up(self) -> None:
        while self._order and self._n_pending < self._max_pending:
            self._add_trial(self._order.popleft())

    def _add_trial(self, config_index: int) -> None:
        curves = self.bank.configs[config_index]
        trial_id = f"{len(self._trials):05d}_{curves.config_id}"
        config = {**curves.config, "config_id": curves.config_id, "attempt": 0}
        trial = Trial("replay", config=config, trial_id=trial_id, stub=True)
        self._replay[trial] = _Replay(curves=curves, run=curves.run_for_attempt(0))
        self._trials.append(trial)
        self._live.add(trial)
        self._pending.append(trial)
        self._n_pending += 1
        self.recorder.proposed(trial_id, config_index)
        self.scheduler.on_trial_add(self, trial)

    def _next_pending(self) -> Trial | None:
        while self._pending and self._pending[0].status != Trial.PENDING:
            self._pending.popleft()
        return self._pending[0] if self._pending else None

    def _fill_workers(self) -> None:
        while True:
            self._top_up()
            if self._free == 0:
                return
            trial = self.scheduler.choose_trial_to_run(self) or self._next_pending()
            if trial is None:
                return
            if trial.status not in _LIVE_WAITING:
                raise RuntimeError(f"choose_trial_to_run returned {trial} in status {trial.status}")
            self._start(trial)

    def _start(self, trial: Trial) -> None:
        rep = self._replay[trial]
        attempt = int(trial.config.get("attempt", 0))
        if attempt != rep.attempt:
            rep.attempt, rep.epoch, rep.elapsed = attempt, 0, 0.0
            rep.run = rep.curves.run_for_attempt(attempt)
            self.recorder.restarted(trial.trial_id)
        self._n_pending -= trial.status == Trial.PENDING
        trial.set_status(Trial.RUNNING)
        self._free -= 1
        if rep.epoch >= rep.run.budget:  # resumed after its last epoch: the trainable returns at once
            trial.last_result["done"] = True
            self.stop_trial(trial)
            return
        self._schedule_epoch(trial, rep)

    def _schedule_epoch(self, trial: Trial, rep: _Replay) -> None:
        rep.token += 1
        when = self.now + rep.run.epoch_time[rep.epoch]
        heapq.heappush(self._events, (when, next(self._seq), trial, rep.token))

    def _release(self, trial: Trial) -> None:
        """Free the worker of a RUNNING trial, cancelling its epoch in progress if any."""
        rep = self._replay[trial]
        rep.token += 1
        self._free += 1
        self.recorder.cancelled(self.now)

    def _end_epoch(self, trial: Trial) -> None:
        rep = self._replay[trial]
        run = rep.run
        cost = run.epoch_time[rep.epoch]
        rep.epoch += 1
        rep.elapsed += cost
        result = make_result(trial, rep, cost)
        self.recorder.epoch(self.now, trial.trial_id, rep.epoch, run.budget, result[METRIC])
        decision = self.scheduler.on_trial_result(self, trial, result)
        if decision == TrialScheduler.STOP:
            result["done"] = True
        trial.run_metadata.last_result = result
        self._execute(trial, rep, decision)

    def _execute(self, trial: Trial, rep: _Replay, decision: str) -> None:
        if decision == TrialScheduler.STOP:
            self.stop_trial(trial)
        elif decision == TrialScheduler.PAUSE:
            self.pause_trial(trial)
        elif trial.status != Trial.RUNNING:
            return  # the scheduler paused/stopped it itself (e.g. a restart): its worker is free
        elif decision == TrialScheduler.CONTINUE:
            if rep.epoch >= rep.run.budget:
                trial.last_result["done"] = True
                self.stop_trial(trial)
            else:
                self._schedule_epoch(trial, rep)
        elif decision == TrialScheduler.NOOP:
            raise RuntimeError(f"NOOP left {trial} RUNNING with nothing to do; Tune would hang")
        else:
            raise ValueError(f"invalid scheduler decision {decision!r} for {trial}")

    def _strand_leftovers(self) -> None:
        leftovers = [t for t in self._trials if t.status in _LIVE_WAITING]
        self.recorder.stranded = len(leftovers)
        for trial in leftovers:
            self.stop_trial(trial)


def make_result(trial: Trial, rep: _Replay, cost: float) -> dict[str, Any]:
    """Return the result of the epoch just replayed, as the project's trainables report it."""
    run, i = rep.run, rep.epoch - 1
    return {
        "training_iteration": rep.epoch,
        "epoch": rep.epoch,
        "val_loss": run.val_loss[i],
        "val_acc": run.val_acc[i],
        "train_loss": run.train_loss[i],
        "grad_norm": run.grad_norm[i],
        "dead_frac": run.dead_frac[i],
        "attempt": rep.attempt,
        "seed": run.seed,
        "lr": rep.curves.lr,
        "time_this_iter_s": cost,
        "time_total_s": rep.elapsed,
        "trial_id": trial.trial_id,
        "should_checkpoint": True,  # every epoch resumes where it stopped, as from its checkpoint
        "done": False,
    }


def replay_ray(
    scheduler: TrialScheduler, bank: Bank, order: Sequence[int], workers: int, max_pending: int
) -> RepeatStats:
    """Replay the configurations ``order`` of ``bank`` through ``scheduler``; return the figures."""
    return SimController(scheduler, bank, order, workers, max_pending).run()
