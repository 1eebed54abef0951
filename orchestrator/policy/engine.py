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
from orchestrator.policy.decision import CONTINUE, PRUNE, STOP, Decision
from orchestrator.policy.pausing import Cut, PauseRecord, Pausing
from orchestrator.policy.prior_guard import PriorGuard
from orchestrator.policy.restarting import FINISHED, Restarting
from orchestrator.policy.restarts import (
    COLLAPSED,
    DEAD,
    LOW,
    STUCK_KIND,
    RestartRecord,
    unpaid_restart,
)
from orchestrator.policy.rules import RankRule, Reading
from orchestrator.policy.scale import MetricScale
from orchestrator.policy.state import load_policy_state, policy_state
from orchestrator.policy.trial import AttemptRecord, _Trial

#: Stuck kinds that point at the initialisation, not the configuration.
INIT_KINDS = ("dead_relu", "vanishing_grad")


class ConvergencePolicy(Restarting, Pausing):
    """Decides continue / stop / prune / pause / restart for each trial from its curves.

    Args:
        config: the settings.
        budget: epochs of one attempt.
        total_epochs: the sweep's epoch budget (trials x budget) for the restart budget; None:
            restarts are limited per trial only.
        sweep_seed: seeds the restarts' seeds.
        rules: the rank rules, consulted in this order (e.g. ``[GuardedRule(AshaRungs(...),
            AshaRungs(..., keep=1 / 9))]``); none: no rank rule.
        prior: the prior from earlier sweeps overruling early rungs before their own evidence
            (:class:`PriorGuard`; configuration, not state: not saved with it); None: no prior.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        budget: int,
        total_epochs: int | None = None,
        sweep_seed: int = 0,
        rules: Sequence[RankRule] = (),
        prior: PriorGuard | None = None,
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1 epoch, got {budget=}")
        self.config = config
        self.budget = budget
        self.total_epochs = total_epochs
        self.sweep_seed = sweep_seed
        self.rules: list[RankRule] = list(rules)
        self.prior = prior
        self.sign = 1.0 if config.mode == "max" else -1.0
        self.trials: dict[str, _Trial] = {}
        self.best: float | None = None  # best final of the finished trials
        self.leaders: list[tuple[float, str]] = []  # the two best (signed metric, trial id) so far
        self.restart_epochs = 0  # epochs trained by attempts after the first
        self.epochs = 0
        self.restarts = RestartRecord()  # per kind of failure: started, finished, paid
        self.metric_scale = MetricScale(config.scale)
        self.pauses: dict[str, list[PauseRecord]] = {}  # trial id -> its pauses (freeze-thaw)

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

    def complete(self, trial_id: str, final: float | None, outcome: str = "completed") -> None:
        """Record a trial's end; a finite final value of a finished trial updates the best.

        Only "completed" and "converged" outcomes count for the best final; a trial is
        completed once (later calls are ignored).
        """
        trial = self._trial(trial_id)
        if trial.finished:
            return
        self._end_attempt(trial, final, outcome)
        trial.lineage[-1].outcome = outcome
        trial.finished = True
        counts = outcome in FINISHED
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
        if (unpaid := unpaid_restart(trial, self.sign, th.chance_margin)) is not None:
            return self._cut(trial_id, trial, verdict, unpaid)
        if trial.collapsed(c.chance, self.sign, c.collapse_margin * unit, th):
            peak, chance = self.sign * (trial.peak or 0.0), self.config.chance
            reason = f"stuck: collapsed back to chance {chance:.3g} after reaching {peak:.3g}"
            restart, _ = self._restart(trial_id, trial, verdict, COLLAPSED, "stuck (collapsed)", reason)
            if restart is not None:
                return restart
        if self._collapse_pending(trial):
            peak = self.sign * (trial.peak or 0.0)
            reason = f"back at chance after reaching {peak:.3g}: held until its window decides a collapse"
            return Decision(CONTINUE, reason, verdict, attempt)
        if status == STUCK:
            kind = DEAD if verdict.kind in INIT_KINDS else STUCK_KIND
            restart, why = self._restart(trial_id, trial, verdict, kind)
            return restart or Decision(PRUNE, f"{verdict.reason}; not restarted: {why}", verdict, attempt)
        if status == PREDICTED_WORSE and c.prune_predicted_worse:
            return self._cut(trial_id, trial, verdict, verdict.reason, (DEAD, STUCK_KIND))
        if status == PLATEAU_BAD:
            restart, why = self._restart(trial_id, trial, verdict, LOW)
            return restart or Decision(STOP, f"{verdict.reason}; not restarted: {why}", verdict, attempt)
        if status == OSCILLATING and c.remedy_lr_factor is not None:
            restart, _ = self._restart(trial_id, trial, verdict, OSCILLATING, evidence=False)
            if restart is not None:
                return restart
        if status == OSCILLATING:
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
        cut = self._rank_cut(trial_id, trial, leader)
        prior = self.prior and self.prior.judge(self.rules, trial, self.sign, cut is not None)
        if cut is not None and prior:  # the prior spares it
            return Decision(CONTINUE, f"rank rule: below its rung at {cut.where}; {prior}", verdict, attempt)
        if cut is not None and (pause := self._pause(trial_id, trial, verdict, cut)) is not None:
            return pause
        if cut is not None or prior:
            # ranked low early says nothing of a local minimum: only an initialisation failure
            why = f"rank rule: below its rung at {cut.where}" if cut is not None else str(prior)
            return self._cut(trial_id, trial, verdict, why, (DEAD, STUCK_KIND))
        return Decision(CONTINUE, verdict.reason, verdict, attempt)

    def _rank_cut(self, trial_id: str, trial: _Trial, leader: float | None) -> Cut | None:
        """The first rank rule's cut of the trial: where it cut it ("epoch 3", "12.5 s of training
        (epoch 2)", then "; " and the rule's evidence when it gives one), the rule, the reading
        and its cutoff; or None: no rule cut it (every rule judges and records it), or its curve
        spares it (its optimistic end could still beat the leader)."""
        if not trial.metric or (trial.attempt > 0 and trial.epoch < trial.lineage[-2].epochs):
            return None  # a restart is judged where the attempt it replaced ended (unpaid_restart)
        reading = Reading(
            key=trial_id if trial.attempt == 0 else f"{trial_id}#{trial.attempt}",
            epoch=trial.epoch,
            seconds=trial.cost,
            value=self.sign * trial.metric[-1],
            neg_loss=-(trial.loss[-1] if math.isfinite(trial.loss[-1]) else math.inf),
        )
        cuts = [
            Cut(_where(rule, reading), i, reading, rule.last_cutoff)
            for i, rule in enumerate(self.rules)
            if rule.prune(reading)
        ]
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

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain, JSON-serialisable data with a version number (see :mod:`.state`)."""
        return policy_state(self)

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; refuses a version it cannot read (see :mod:`.state`)."""
        load_policy_state(self, data)


def _where(rule: RankRule, reading: Reading) -> str:
    """Where ``rule`` cut ``reading``, with the evidence it gives after "; "."""
    note = rule.explain()
    return f"{reading.place(rule.clock)}; {note}" if note else reading.place(rule.clock)
