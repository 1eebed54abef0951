"""Ray adapter of the convergence policy: the only code that touches Ray trial internals.

Each result goes to :class:`ConvergencePolicy`; its decision becomes a Ray action:

- continue -> ``CONTINUE``;
- stop (converged) -> ``STOP``, and Optuna is told COMPLETE with the trial's value;
- prune -> ``STOP``, and Optuna is told PRUNED (FAIL for a non-finite loss);
- pause (freeze-thaw) -> ``PAUSE`` when the result came with its checkpoint, else prune; which
  paused trial resumes, and when one is stopped instead: :mod:`orchestrator.pausing`;
- restart -> in place, the way Ray's PBT restarts trials: pause without a checkpoint, set the
  new config (``attempt`` + 1, the new ``seed``, remedy changes), forget the latest
  checkpoint so the trainable starts at epoch 1, return ``NOOP``. The paused trial is the
  first one :meth:`choose_trial_to_run` picks again.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator import pausing
from orchestrator.contract import contract_problem, hyperparameters, objectives_problem
from orchestrator.policy import (
    CONTINUE,
    OPTIONAL_KEYS,
    PAUSE,
    PRUNE,
    RESTART,
    STOP,
    AttemptRecord,
    ConvergencePolicy,
    Decision,
    decision_data,
    decision_from_data,
    decision_outcome,
    rule_coverage,
)

logger = logging.getLogger(__name__)

STATE_FILE = "convergence_scheduler.json"


def _value(result: dict[str, Any], key: str) -> float:
    value = result.get(key)
    return float(value) if value is not None else math.nan


def _finite(value: Any) -> bool:
    """A finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(result: dict[str, Any]) -> float | None:
    """What the epoch took: Ray's ``time_this_iter_s`` (None when absent)."""
    value = result.get("time_this_iter_s")
    return float(value) if isinstance(value, (int, float)) else None


class ConvergenceScheduler(FIFOScheduler):
    """Stops converged trials, prunes hopeless ones, restarts stuck ones with fresh weights.

    The first hop of every result: a result that breaks the metric contract
    (:func:`orchestrator.contract.contract_problem`: no objective, no loss, not a number) stops
    its trial as failed, with the problem in :meth:`problem`, before the policy sees it; the
    mode is the policy's, and a searcher or Tuner asking for the other one is refused.
    Callbacks and the summary read decisions through :meth:`decision`, :meth:`lineage`,
    :meth:`problem` and :attr:`restarts`, and which rules were active through :meth:`rules`.
    """

    def __init__(
        self,
        policy: ConvergencePolicy,
        *,
        metric: str | None = None,
        mode: str | None = None,
        loss_key: str = "val_loss",
        objectives: list[str] | None = None,
        why_off: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if mode is not None and mode != policy.config.mode:
            raise ValueError(f"mode: the policy ranks with mode={policy.config.mode!r}, got {mode=}")
        self.policy = policy
        self._metric = metric
        self._mode = policy.config.mode
        self.loss_key = loss_key
        self.objectives = list(objectives or [])  # several objectives: each must be reported
        self.why_off = dict(why_off or {})  # rules the sweep turned off, with why
        self.decisions: dict[str, Decision] = {}  # trial id -> its latest decision
        self.broken: dict[str, str] = {}  # trial id -> how its result broke the metric contract
        self._order: dict[str, int] = {}  # trial id -> when it was added
        self._first: dict[str, tuple[float, float]] = {}  # trial id -> first attempt's epoch-1 values
        self._repeated: set[str] = set()  # trials whose restart repeated their first attempt
        self.reported: set[str] = set()  # optional keys some valid result carried as a finite number

    # -- what callbacks and the summary read ---------------------------------------------
    @property
    def restarts(self) -> int:
        """Restarts so far, over all trials (from the policy's lineage of each trial)."""
        return sum(len(self.policy.lineage(tid)) - 1 for tid in self.policy.trials)

    def decision(self, trial_id: str) -> Decision | None:
        """The latest decision on ``trial_id`` (None before its first result)."""
        return self.decisions.get(trial_id)

    def lineage(self, trial_id: str) -> list[AttemptRecord]:
        """The attempts of ``trial_id`` so far, first one first."""
        return self.policy.lineage(trial_id)

    def problem(self, trial_id: str) -> str | None:
        """How ``trial_id``'s result broke the metric contract (``<key>: <problem>``), or None."""
        return self.broken.get(trial_id)

    def rules(self) -> tuple[list[str], dict[str, str]]:
        """The policy's rules that were active, and each other rule with why it was off
        (:func:`orchestrator.policy.rule_coverage`, from the optional keys trials reported; a rule
        the sweep turned off (``why_off``) with the sweep's reason)."""
        active, off = rule_coverage(
            self.policy.config, self.policy.rules, self.reported, self.policy.prior is not None
        )
        return active, {name: self.why_off.get(name, why) for name, why in off.items()}

    def all_broken(self) -> bool:
        """True once some trial broke the contract and no trial has reported a valid result."""
        return bool(self.broken) and not self.decisions

    # -- Ray's TrialScheduler hooks ------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Refuse another metric than the one set, or a mode the policy does not rank with."""
        if metric and self._metric and metric != self._metric:
            return False
        if mode and mode != self._mode:
            return False
        self._metric = self._metric or metric
        return True

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._order.setdefault(trial.trial_id, len(self._order))
        params = hyperparameters(trial.config)
        self.policy.add(trial.trial_id, params, seed_key=trial.config.get("trial_index"))
        pausing.wait_again(self.policy, trial)  # a resumed sweep's paused trial waits as before

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        tid = trial.trial_id
        attempt = int(result.get("attempt", 0))
        current = self.policy.lineage(tid)[-1].attempt
        if attempt != current:  # a late result of an attempt that was already restarted
            logger.debug("trial %s: ignoring a result of attempt %d (now %d)", tid, attempt, current)
            return TrialScheduler.NOOP
        problem = contract_problem(result, self._metric or "val_acc", self.loss_key)
        if (problem := problem or objectives_problem(result, self.objectives)) is not None:
            return self._break(tune_controller, tid, problem)
        self.reported.update(k for k in OPTIONAL_KEYS if k not in self.reported and _finite(result.get(k)))
        epoch = int(result["epoch"])
        self._note_start(tid, epoch, result)
        if epoch <= self.policy.lineage(tid)[-1].epochs:  # replayed after a restore: decided already
            logger.debug("trial %s: epoch %d of attempt %d already observed", tid, epoch, attempt)
            return TrialScheduler.CONTINUE
        decision = self.policy.observe(
            tid,
            epoch,
            _value(result, self.loss_key),
            _value(result, self._metric or "val_acc"),
            grad_norm=result.get("grad_norm"),
            dead_frac=result.get("dead_frac"),
            seconds=_seconds(result),
        )
        self.decisions[tid] = decision
        if decision.action == CONTINUE:
            return TrialScheduler.CONTINUE
        value = _value(result, self._metric or "val_acc")
        if decision.action == PAUSE and pausing.has_checkpoint(result):
            logger.info("trial %s: paused at epoch %d (%s)", tid, epoch, decision.reason)
            pausing.release_slot(tune_controller, tid)
            return TrialScheduler.PAUSE
        if decision.action == PAUSE:  # resuming would repeat epochs or start over: pruned, saying so
            why = f"no checkpoint of epoch {epoch} to resume from"
            decision = self.decisions[tid] = self.policy.refuse_pause(tid, decision, why)
        if decision.action == STOP:
            self.policy.complete(tid, value, "converged")
            told = [_value(result, k) for k in self.objectives] if self.objectives else value
            self._tell_searcher(tune_controller, tid, "COMPLETE", told, decision_outcome(decision))
            return TrialScheduler.STOP
        if decision.action == PRUNE:
            self.policy.complete(tid, value, "pruned")
            nonfinite = decision.verdict is not None and decision.verdict.kind == "nonfinite"
            state = "FAIL" if nonfinite else "PRUNED"
            self._tell_searcher(tune_controller, tid, state, None, decision_outcome(decision))
            return TrialScheduler.STOP
        if decision.action == RESTART:
            self._restart(tune_controller, trial, decision)
            return TrialScheduler.NOOP
        raise ValueError(f"unknown policy action {decision.action!r}")

    def _note_start(self, tid: str, epoch: int, result: dict) -> None:
        """At an attempt's first epoch: its seed into the lineage (the trial derives the first
        one), and a warning when a restart repeats its first attempt exactly (same first loss
        and objective: the function seeds itself with a constant, so restarts change nothing)."""
        if epoch != 1:
            return
        record = self.policy.lineage(tid)[-1]
        if record.seed is None and isinstance(result.get("seed"), int):
            record.seed = result["seed"]
        first = (_value(result, self.loss_key), _value(result, self._metric or "val_acc"))
        if record.attempt == 0:
            self._first[tid] = first
        elif self._first.get(tid) == first and tid not in self._repeated:
            self._repeated.add(tid)
            logger.warning(
                "trial %s: attempt %d (seed %s) repeats attempt 0 exactly at epoch 1; does the train "
                "function seed itself with a constant? A restart then changes nothing",
                tid, record.attempt, result.get("seed"),
            )  # fmt: skip

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        record = self.policy.lineage(trial.trial_id)[-1]
        if record.outcome is None:  # reached its budget (not stopped by us)
            self.policy.complete(trial.trial_id, _value(result or {}, self._metric or "val_acc"))

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        record = self.policy.lineage(trial.trial_id)[-1]
        if record.outcome is None:
            self.policy.complete(trial.trial_id, None, "error")

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        if self.policy.is_paused(trial.trial_id):  # the sweep ends before it resumed
            self._end_paused(tune_controller, trial.trial_id, "the sweep ended first")
        self.on_trial_error(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """Restarted trials first (a restart does not wait behind new trials), then a paused trial
        that would pass its rung now, then new trials, then, once the searcher has none left, the
        most promising paused trial (:mod:`orchestrator.pausing`). Only live trials are looked at."""
        live, frozen = list(tune_controller.get_live_trials()), self.policy.is_paused
        if restarted := [t for t in live if t.status == Trial.PAUSED and not frozen(t.trial_id)]:
            return self._earliest(tune_controller, restarted)
        promoted = pausing.trial_to_resume(self.policy, tune_controller, live, promoted_only=True)
        if promoted is not None:
            return promoted
        if pending := [t for t in live if t.status == Trial.PENDING]:
            return self._earliest(tune_controller, pending)
        if not pausing.search_finished(tune_controller):
            return None
        for trial in pausing.stale(self.policy, live):
            self._end_paused(tune_controller, trial.trial_id, pausing.STALE)
            tune_controller.stop_trial(trial)
        return pausing.trial_to_resume(self.policy, tune_controller, live, promoted_only=False)

    def _earliest(self, tune_controller: Any, found: list[Trial]) -> Trial:
        """The trial of ``found`` added first (in the controller's order if this scheduler missed one)."""
        if all(t.trial_id in self._order for t in found):
            return min(found, key=lambda t: self._order[t.trial_id])
        status = found[0].status
        return next(t for t in tune_controller.get_trials() if t.status == status)

    def debug_string(self) -> str:
        return f"Using the convergence scheduler ({self.restarts} restarts)."

    # -- actions -------------------------------------------------------------------------
    def _restart(self, tune_controller: Any, trial: Trial, decision: Decision) -> None:
        new_config = {**trial.config, "attempt": decision.attempt, "seed": decision.seed, **decision.changes}
        tune_controller.pause_trial(trial, should_checkpoint=False)
        trial.set_config(new_config)
        # Forget the latest checkpoint (as PBT sets it): the next start trains from scratch.
        trial.run_metadata.checkpoint_manager._latest_checkpoint_result = None
        changed = f", changed {decision.changes}" if decision.changes else ""
        logger.info(
            "trial %s: restart as attempt %d with seed %s (%s)%s",
            trial, decision.attempt, decision.seed, decision.reason, changed,
        )  # fmt: skip
        searcher = _searcher(tune_controller)
        if searcher is not None and hasattr(searcher, "note_restart"):  # the study's user attributes
            searcher.note_restart(trial.trial_id, decision.attempt, decision.reason)
        if decision.changes and searcher is not None and hasattr(searcher, "supersede"):
            searcher.supersede(trial.trial_id, decision.changes, decision.reason)

    def _end_paused(self, tune_controller: Any, trial_id: str, why: str) -> None:
        """A paused trial ends without resuming: pruned, the reason saying where it paused and ``why``."""
        pausing.hold_slot(tune_controller, trial_id)  # counted again, so its end reaches the searcher
        decision = self.decisions[trial_id] = self.policy.stop_paused(trial_id, why)
        self._tell_searcher(tune_controller, trial_id, "PRUNED", None, decision_outcome(decision))

    def _break(self, tune_controller: Any, trial_id: str, problem: str) -> str:
        """Stop a trial whose result broke the metric contract; Optuna is told FAIL."""
        if trial_id not in self.broken:
            self.broken[trial_id] = problem
            logger.error("trial %s: %s", trial_id, problem)
            self.policy.complete(trial_id, None, "error")
            attrs = {"verdict": "error", "reason": problem}
            self._tell_searcher(tune_controller, trial_id, "FAIL", None, attrs)
        return TrialScheduler.STOP

    def _tell_searcher(
        self, tune_controller: Any, trial_id: str, state: str, value: Any, attrs: dict[str, Any]
    ) -> None:
        """Tell the searcher how the trial ended (``attrs`` become the Optuna trial's user attrs)."""
        searcher = _searcher(tune_controller)
        if searcher is not None and hasattr(searcher, "record_outcome"):
            searcher.record_outcome(trial_id, state, value, attrs)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data: the policy's state, each trial's latest decision and broken contracts."""
        return {
            "policy": self.policy.state_dict(),
            "decisions": {tid: decision_data(d) for tid, d in self.decisions.items()},
            "broken": dict(self.broken),
            "reported": sorted(self.reported),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.decisions = {tid: decision_from_data(d) for tid, d in state.get("decisions", {}).items()}
        self.broken = dict(state.get("broken", {}))
        self.reported = set(state.get("reported", ()))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump(self.state_dict(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.load_state_dict(json.load(f))

    def save_to_dir(self, directory: str) -> str:
        """Write the state beside the experiment's own state files (atomically)."""
        path = os.path.join(directory, STATE_FILE)
        tmp = path + ".tmp"
        self.save(tmp)
        os.replace(tmp, path)
        return path


def _searcher(tune_controller: Any) -> Any:
    """The Searcher behind Tune's SearchGenerator and the ConcurrencyLimiter that Tune wraps
    around it when ``max_concurrent_trials`` is set (None when there is none)."""
    searcher = getattr(getattr(tune_controller, "search_alg", None), "searcher", None)
    while searcher is not None and not hasattr(searcher, "record_outcome") and hasattr(searcher, "searcher"):
        searcher = searcher.searcher
    return searcher
