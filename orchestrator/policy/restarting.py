"""How the convergence policy restarts a trial: the evidence per kind of failure, the budget, the bet.

:class:`Restarting` is the part of :class:`orchestrator.policy.engine.ConvergencePolicy` that
decides whether a failing trial restarts from scratch with a new seed (the rules are in
:mod:`orchestrator.policy.restarts`: a restart per kind of failure on trust, then only while
that kind's restarts paid; a restart not better where its predecessor ended is cut there),
closes attempts and keeps the record. Pure (stdlib).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from orchestrator.policy.config import PolicyConfig
from orchestrator.policy.decision import PRUNE, RESTART, Decision
from orchestrator.policy.restarts import COLLAPSED, KINDS, STUCK_KIND, RestartRecord, failure_kind, remedy
from orchestrator.policy.trial import AttemptRecord, _Trial
from orchestrator.seeding import derive_seed

if TYPE_CHECKING:
    from analysis.convergence import Thresholds, Verdict

#: Outcomes of a trial that ran its course: its final value counts.
FINISHED = ("completed", "converged")


class Restarting:
    """The restart half of the policy (a mixin: the policy holds the attributes below)."""

    config: PolicyConfig
    total_epochs: int | None
    sweep_seed: int
    sign: float
    scale: float
    thresholds: Thresholds
    restart_epochs: int
    restarts: RestartRecord

    def restart_budget_left(self) -> bool:
        """True while restarts have spent less than their share of the sweep's epochs."""
        if self.total_epochs is None:
            return True
        return self.restart_epochs < self.config.restart_budget * self.total_epochs

    def restart_evidence(self, kind: str) -> tuple[bool, str]:
        """Whether the sweep's record lets a failure of ``kind`` restart now, and why (in words)."""
        return self.restarts.judge(kind, self.config.restart_trust, self.config.restart_success)

    def _end_attempt(self, trial: _Trial, final: float | None, outcome: str) -> None:
        """Close the current attempt. A restarted one paid when it ran its course (``outcome``
        completed or converged: neither cut, pruned nor restarted again) and ended better than
        the attempt it replaced by more than the chance margin; the record of its kind counts it."""
        record = trial.lineage[-1]
        record.final = final
        if record.attempt == 0:
            return
        before = trial.lineage[-2].final
        known = final is not None and before is not None and math.isfinite(final) and math.isfinite(before)
        better = known and self.sign * (final - before) > self.thresholds.chance_margin  # type: ignore[operator]
        self.restarts.finish(record.kind or STUCK_KIND, better and outcome in FINISHED)

    def _cut(
        self, trial_id: str, trial: _Trial, verdict: Verdict, reason: str, kinds: tuple[str, ...] = KINDS
    ) -> Decision:
        """Prune a trial that will end worse than others, or restart it when its kind of failure
        (:func:`~orchestrator.policy.restarts.failure_kind`) is among ``kinds`` and the evidence
        says it is the seed's luck (:meth:`_restart`)."""
        kind = failure_kind(trial, self.config.chance, self.thresholds, self.sign)
        if kind not in kinds:
            return Decision(PRUNE, reason, verdict, trial.attempt)
        restart, why = self._restart(trial_id, trial, verdict, kind, kind, reason)
        return restart or Decision(PRUNE, f"{reason}; not restarted: {why}", verdict, trial.attempt)

    def _collapse_pending(self, trial: _Trial) -> bool:
        """A collapse may be under way (:meth:`_Trial.back_at_chance`): held while a restart is still
        possible, so whether a collapse is restarted does not depend on which other trials happened
        to report first (the leader they set would prune it)."""
        c = self.config
        if not trial.back_at_chance(c.chance, self.sign, c.collapse_margin * self.scale, self.thresholds):
            return False
        return self._may_restart(trial, COLLAPSED)[0]

    def _may_restart(self, trial: _Trial, kind: str, evidence: bool = True) -> tuple[bool, str]:
        """Whether ``trial`` may restart for a failure of ``kind``, and why (not): a restart left to
        the trial, the sweep's restart budget left, and (when ``evidence``) the sweep's record of
        ``kind`` saying restarts pay (:meth:`restart_evidence`)."""
        if trial.attempt >= self.config.max_restarts:
            return False, f"its {self.config.max_restarts} restart(s) used"
        if not self.restart_budget_left():
            return False, "the sweep's restart budget is spent"
        return self.restart_evidence(kind) if evidence else (True, f"the {kind} remedy is on")

    def _restart(
        self,
        trial_id: str,
        trial: _Trial,
        verdict: Verdict,
        kind: str,
        cause: str | None = None,
        reason: str | None = None,
        *,
        evidence: bool = True,
    ) -> tuple[Decision | None, str]:
        """A restart decision for a failure of ``kind`` and the evidence for it, or (None, why not)
        (:meth:`_may_restart`).

        ``cause`` (default: the verdict's status) goes into the lineage as "restarted: <cause>";
        the new attempt's reason is ``reason`` (default: the verdict's) and the evidence.
        """
        worth, why = self._may_restart(trial, kind, evidence)
        if not worth:
            return None, why
        attempt = trial.attempt + 1
        key = trial.seed_key if trial.seed_key is not None else trial_id
        seed = derive_seed(self.sweep_seed, key, attempt)
        changes = remedy(self.config, trial.params, verdict)
        reason = f"{reason or verdict.reason}; {why}"
        self._end_attempt(trial, trial.metric[-1] if trial.metric else None, "restarted")
        trial.lineage[-1].outcome = f"restarted: {cause or verdict.status}"
        trial.lineage.append(AttemptRecord(attempt, seed, reason, kind=kind))
        trial.params.update(changes)
        trial.reset()
        self.restarts.start(kind)
        return Decision(RESTART, reason, verdict, attempt, seed, changes), why
