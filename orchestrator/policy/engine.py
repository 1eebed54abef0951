"""The convergence policy's state machine: one epoch of one trial in, one decision out.

:class:`ConvergencePolicy` applies the rules of :mod:`orchestrator.policy` (its docstring states
them), in their order, to each epoch of a trial's current attempt, and keeps the sweep-wide
references they need: the best final, the leaders, the restart budget and record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from analysis.convergence import (
    CONVERGED,
    DIVERGED,
    OSCILLATING,
    PLATEAU_BAD,
    PREDICTED_WORSE,
    STUCK,
    Thresholds,
    Verdict,
    diagnose,
    level_origin,
    optimistic_final,
)
from orchestrator.policy.config import PolicyConfig
from orchestrator.policy.decision import CONTINUE, PRUNE, RESTART, STOP, Decision
from orchestrator.policy.rules import RankRule, Reading
from orchestrator.policy.scale import MetricScale
from orchestrator.policy.state import load_policy_state, policy_state
from orchestrator.policy.trial import AttemptRecord, _Trial
from orchestrator.seeding import derive_seed

#: Stuck kinds that point at the initialisation, not the configuration.
INIT_KINDS = ("dead_relu", "vanishing_grad")


class ConvergencePolicy:
    """Decides continue / stop / prune / restart for each trial from its curves.

    Args:
        config: the settings.
        budget: epochs of one attempt.
        total_epochs: the sweep's epoch budget (trials x budget) for the restart budget; None:
            restarts are limited per trial only.
        sweep_seed: seeds the restarts' seeds.
        rules: the rank rules, consulted in this order (e.g. ``[GuardedRule(AshaRungs(...),
            AshaRungs(..., keep=1 / 9))]``); none: no rank rule.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        budget: int,
        total_epochs: int | None = None,
        sweep_seed: int = 0,
        rules: Sequence[RankRule] = (),
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1 epoch, got {budget=}")
        self.config = config
        self.budget = budget
        self.total_epochs = total_epochs
        self.sweep_seed = sweep_seed
        self.rules: list[RankRule] = list(rules)
        self.sign = 1.0 if config.mode == "max" else -1.0
        self.trials: dict[str, _Trial] = {}
        self.best: float | None = None  # best final of the finished trials
        self.leaders: list[tuple[float, str]] = []  # the two best (signed metric, trial id) so far
        self.restart_epochs = 0  # epochs trained by attempts after the first
        self.epochs = 0
        self.restarts_finished = 0
        self.restarts_succeeded = 0
        self.metric_scale = MetricScale(config.scale)

    @property
    def scale(self) -> float:
        """The metric's unit now: ``config.scale``, or measured (:class:`MetricScale`) when None."""
        return self.metric_scale.unit

    @property
    def thresholds(self) -> Thresholds:
        """The config's thresholds with their margins in metric units times :attr:`scale`."""
        return self.config.thresholds.scaled(self.scale)

    # -- bookkeeping ---------------------------------------------------------------------
    def _trial(self, trial_id: str) -> _Trial:
        if trial_id not in self.trials:
            self.trials[trial_id] = _Trial(self.config.history)
        return self.trials[trial_id]

    def add(
        self, trial_id: str, params: dict[str, Any] | None = None, seed_key: str | int | None = None
    ) -> None:
        """Register a trial, the hyperparameters it runs with, and what its seeds derive from.

        A restart's seed is ``derive_seed(sweep_seed, seed_key, attempt)``; ``seed_key``
        defaults to the trial id (pass a stable index to make seeds reproducible).
        """
        trial = self._trial(trial_id)
        trial.params = dict(params or {})
        trial.seed_key = seed_key

    def lineage(self, trial_id: str) -> list[AttemptRecord]:
        """The attempts of a trial so far, first one first."""
        return list(self._trial(trial_id).lineage)

    def restart_budget_left(self) -> bool:
        """True while restarts have spent less than their share of the sweep's epochs."""
        if self.total_epochs is None:
            return True
        return self.restart_epochs < self.config.restart_budget * self.total_epochs

    def restarts_pay_off(self) -> bool:
        """True when the sweep's finished restarts mostly ended better than what they replaced."""
        c, finished = self.config, self.restarts_finished
        return finished >= c.restart_record and self.restarts_succeeded >= c.restart_success * finished

    def leader(self, trial_id: str | None = None) -> float | None:
        """The best metric reported so far by a trial other than ``trial_id``, or the best
        final when that is better (None while there is neither)."""
        signed = next((v for v, tid in self.leaders if tid != trial_id), None)
        if self.best is not None and (signed is None or self.sign * self.best > signed):
            return self.best
        return None if signed is None else self.sign * signed

    def _lead(self, trial_id: str, metric: float) -> None:
        """Keep the two best (signed metric, trial id) pairs, one per trial."""
        signed = self.sign * metric
        if not math.isfinite(signed) or any(t == trial_id and v >= signed for v, t in self.leaders):
            return
        others = [(v, t) for v, t in self.leaders if t != trial_id]
        self.leaders = sorted([*others, (signed, trial_id)], reverse=True)[:2]

    def _end_attempt(self, trial: _Trial, final: float | None) -> None:
        """Close the current attempt; a restarted one is scored against the attempt it replaced."""
        record = trial.lineage[-1]
        record.final = final
        if record.attempt == 0:
            return
        before = trial.lineage[-2].final
        self.restarts_finished += 1
        if final is not None and before is not None and math.isfinite(final) and math.isfinite(before):
            self.restarts_succeeded += self.sign * (final - before) > self.thresholds.chance_margin

    def complete(self, trial_id: str, final: float | None, outcome: str = "completed") -> None:
        """Record a trial's end; a finite final value of a finished trial updates the best.

        Only "completed" and "converged" outcomes count for the best final; a trial is
        completed once (later calls are ignored).
        """
        trial = self._trial(trial_id)
        if trial.finished:
            return
        self._end_attempt(trial, final)
        trial.lineage[-1].outcome = outcome
        trial.finished = True
        counts = outcome in ("completed", "converged")
        if counts and final is not None and math.isfinite(final):
            if self.best is None or self.sign * (final - self.best) > 0:
                self.best = final

    # -- the decision --------------------------------------------------------------------
    def observe(
        self,
        trial_id: str,
        epoch: int,
        loss: float,
        metric: float,
        grad_norm: float | None = None,
        dead_frac: float | None = None,
        seconds: float | None = None,
    ) -> Decision:
        """Take one epoch's numbers of a trial's current attempt and decide what to do.

        ``seconds`` is what the epoch took; an attempt's training time (for rules on seconds)
        counts its epochs after the first (start-up work goes into the first), and the second
        epochs of first attempts calibrate the rules' unit. NaN policy: a non-finite loss is
        kept and diagnosed as divergence; a missing or NaN diagnostic (grad_norm, dead_frac,
        seconds) only disables the rule that needs it. Margins are in units of :attr:`scale`.
        """
        trial = self._trial(trial_id)
        self.metric_scale.observe(trial_id, epoch, trial.attempt, metric)
        counted = trial.record(epoch, loss, metric, self.sign, grad_norm, dead_frac, seconds)
        if counted is not None and epoch == 2 and trial.attempt == 0:
            for rule in self.rules:
                rule.calibrate(counted)
        self.epochs += 1
        if trial.attempt > 0:
            self.restart_epochs += 1
        leader = self.leader(trial_id)
        self._lead(trial_id, metric)
        verdict = diagnose(
            trial.loss,
            metric=trial.metric,
            mode=self.config.mode,
            grad_norm=trial.grad,
            dead_frac=trial.dead,
            budget=self.budget,
            best=leader,
            chance=self.config.chance,
            start_epoch=epoch - len(trial.loss) + 1,
            initial_loss=trial.initial_loss,
            best_loss=trial.lowest_loss,
            thresholds=self.config.thresholds,
            scale=self.scale,
        )
        return self._decide(trial_id, trial, verdict, leader)

    def _decide(self, trial_id: str, trial: _Trial, verdict: Verdict, leader: float | None) -> Decision:
        """The decision for the trial's verdict: the module's rules 2 to 10, in their order."""
        c, th, status, unit = self.config, self.thresholds, verdict.status, self.scale
        attempt = trial.attempt
        if status == DIVERGED:
            return Decision(PRUNE, verdict.reason, verdict, attempt)
        if trial.collapsed(c.chance, self.sign, c.collapse_margin * unit, th):
            peak, chance = self.sign * (trial.peak or 0.0), self.config.chance
            reason = f"stuck: collapsed back to chance {chance:.3g} after reaching {peak:.3g}"
            if restart := self._restart(trial_id, trial, verdict, "stuck (collapsed)", reason):
                return restart
        if self._collapse_pending(trial):
            peak = self.sign * (trial.peak or 0.0)
            reason = f"back at chance after reaching {peak:.3g}: held until its window decides a collapse"
            return Decision(CONTINUE, reason, verdict, attempt)
        if status == STUCK:
            worth = verdict.kind in INIT_KINDS or self.restarts_pay_off()
            restart = self._restart(trial_id, trial, verdict) if worth else None
            return restart or Decision(PRUNE, f"{verdict.reason}; not restarted", verdict, attempt)
        if status == PREDICTED_WORSE and c.prune_predicted_worse:
            return Decision(PRUNE, verdict.reason, verdict, attempt)
        if status == PLATEAU_BAD:
            restart = self._restart(trial_id, trial, verdict) if c.restart_on_plateau_bad else None
            return restart or Decision(STOP, verdict.reason, verdict, attempt)
        if status == OSCILLATING:
            restart = self._restart(trial_id, trial, verdict) if c.remedy_lr_factor is not None else None
            if restart is not None:
                return restart
            recent = [v for v in list(trial.metric)[-th.window :] if math.isfinite(v)]
            mean = sum(recent) / len(recent) if recent else math.nan
            if leader is not None and not self.sign * (mean - leader) >= -th.bad_margin:
                reason = f"{verdict.reason}; its mean {mean:.4g} is far below the leader {leader:.4g}"
                return Decision(PRUNE, reason, verdict, attempt)
        if status == CONVERGED and c.stop_converged:
            level = verdict.evidence["level"]
            margin = c.contender_margin * unit
            contender = self.best is not None and self.sign * (level - self.best) >= -margin
            if not contender and self.budget - trial.epoch >= c.stop_min_left * self.budget:
                return Decision(STOP, verdict.reason, verdict, attempt)
            why = "a contender" if contender else "close to its budget"
            return Decision(CONTINUE, f"{verdict.reason}; {why}: runs to the budget", verdict, attempt)
        if (where := self._rank_cut(trial_id, trial, leader)) is not None:
            return Decision(PRUNE, f"rank rule: below its rung at {where}", verdict, attempt)
        return Decision(CONTINUE, verdict.reason, verdict, attempt)

    def _collapse_pending(self, trial: _Trial) -> bool:
        """The attempt beat chance by more than ``collapse_margin`` and its latest metric is back at
        chance, but fewer than a window of epochs are: a collapse may be under way. Held while a
        restart is still possible, so whether a collapse is restarted does not depend on which
        other trials happened to report first (the leader they set would prune it)."""
        c, th = self.config, self.thresholds
        if c.chance is None or trial.peak is None or not trial.metric:
            return False
        if trial.peak - self.sign * c.chance <= c.collapse_margin * self.scale:
            return False
        if not abs(trial.metric[-1] - c.chance) <= th.chance_margin:
            return False
        return trial.attempt < c.max_restarts and self.restart_budget_left()

    def _rank_cut(self, trial_id: str, trial: _Trial, leader: float | None) -> str | None:
        """Where the first rank rule that cuts the trial cut it ("epoch 3", "12.5 s of training
        (epoch 2)"), or None: no rule cut it (every rule judges and records it), or its curve
        spares it (its optimistic end could still beat the leader)."""
        if not trial.metric:
            return None
        reading = Reading(
            key=trial_id if trial.attempt == 0 else f"{trial_id}#{trial.attempt}",
            epoch=trial.epoch,
            seconds=trial.cost,
            value=self.sign * trial.metric[-1],
            neg_loss=-(trial.loss[-1] if math.isfinite(trial.loss[-1]) else math.inf),
        )
        cuts = [reading.place(rule.clock) for rule in self.rules if rule.prune(reading)]
        if not cuts or leader is None:
            return cuts[0] if cuts else None
        optimistic = optimistic_final(
            list(trial.metric),
            self.budget,
            mode=self.config.mode,
            start_epoch=trial.epoch - len(trial.metric) + 1,
            thresholds=self.config.thresholds,
            scale=self.scale,
            origin=level_origin(self.config.mode, self.config.chance, self.scale),
        )
        return cuts[0] if optimistic is None or self.sign * (optimistic - leader) < 0.0 else None

    def _remedy(self, trial: _Trial, verdict: Verdict) -> dict[str, Any]:
        c = self.config
        if verdict.status == OSCILLATING and c.remedy_lr_factor is not None and "lr" in trial.params:
            return {"lr": float(trial.params["lr"]) * c.remedy_lr_factor}
        if verdict.kind == "dead_relu" and c.remedy_leaky_relu and trial.params.get("activation") == "relu":
            return {"activation": "leaky_relu"}
        return {}

    def _restart(
        self,
        trial_id: str,
        trial: _Trial,
        verdict: Verdict,
        cause: str | None = None,
        reason: str | None = None,
    ) -> Decision | None:
        """A restart decision when the trial and the sweep still have restart budget, else None.

        ``cause`` (default: the verdict's status) goes into the lineage as "restarted: <cause>";
        ``reason`` (default: the verdict's) is the new attempt's reason.
        """
        if trial.attempt >= self.config.max_restarts or not self.restart_budget_left():
            return None
        attempt = trial.attempt + 1
        key = trial.seed_key if trial.seed_key is not None else trial_id
        seed = derive_seed(self.sweep_seed, key, attempt)
        changes = self._remedy(trial, verdict)
        reason = reason or verdict.reason
        self._end_attempt(trial, trial.metric[-1] if trial.metric else None)
        trial.lineage[-1].outcome = f"restarted: {cause or verdict.status}"
        trial.lineage.append(AttemptRecord(attempt, seed, reason))
        trial.params.update(changes)
        trial.reset()
        return Decision(RESTART, reason, verdict, attempt, seed, changes)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain, JSON-serialisable data with a version number (see :mod:`.state`)."""
        return policy_state(self)

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; refuses a version it cannot read (see :mod:`.state`)."""
        load_policy_state(self, data)
