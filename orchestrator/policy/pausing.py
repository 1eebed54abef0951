"""Freeze-thaw: a trial below its rung but not hopeless is paused, not pruned, and may resume.

:class:`Pausing` is the part of :class:`orchestrator.policy.engine.ConvergencePolicy` that turns a
rank rule's cut into a pause and keeps the paused trials. The rules, pure (stdlib):

- **Pause**: a rank rule cut the trial (rule 9 of :mod:`orchestrator.policy`), ``pause`` is on,
  the trial is not hopeless (no initialisation failure, better than chance:
  :func:`~orchestrator.policy.restarts.failure_kind` says it learned) and its value is within
  ``pause_margin`` (metric units, times the scale) of the rung's cutoff. A resumed trial
  meets its next rungs as any trial: it may be paused there again.
- **Promote**: a paused trial whose value would now pass the rung it was cut at (the values
  that reached the rung since lowered its cutoff: :meth:`RankRule.would_pass`) resumes before
  any new configuration starts, if its cut was settled (:func:`~orchestrator.policy.rules.settled`:
  the rung held enough values); a trial cut among the first values at a rung, where the order
  of arrival decides, resumes only at the end.
- **Resume at the end**: when no new configuration is left and a slot is free, the most
  promising paused trial resumes (the smallest shortfall to its cutoff first).
- **Stop**: a paused trial that never resumes (the sweep ends first) is stopped as pruned with
  a reason that says where it was paused.

A resumed trial continues from the epoch it was paused at: its curve, its rungs and its
budget go on where they stopped. The adapter pauses only with a checkpoint of that epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.policy.config import PolicyConfig
from orchestrator.policy.decision import PAUSE, PRUNE, Decision
from orchestrator.policy.restarts import LOW, failure_kind
from orchestrator.policy.rules import RankRule, Reading, settled
from orchestrator.policy.trial import _Trial

if TYPE_CHECKING:
    from analysis.convergence import Thresholds, Verdict


@dataclass(frozen=True)
class Cut:
    """A rank rule's cut: where (for the reason), which rule, the reading it judged, its cutoff."""

    where: str
    rule: int
    reading: Reading
    cutoff: float | None


@dataclass
class PauseRecord:
    """One pause of a trial: where, why, how far below its cutoff; how it ended (None: paused)."""

    epoch: int
    attempt: int
    reason: str
    shortfall: float  # the cutoff minus the value, in metric units (>= 0)
    rule: int
    reading: dict[str, Any] = field(default_factory=dict)
    settled: bool = True  # cut among enough values to be promoted ahead of new configurations
    resumed: str | None = None  # why it resumed
    stopped: str | None = None  # why it was stopped while paused

    @property
    def open(self) -> bool:
        """Paused now: neither resumed nor stopped."""
        return self.resumed is None and self.stopped is None


class Pausing:
    """The freeze-thaw half of the policy (a mixin: the policy holds the attributes below)."""

    config: PolicyConfig
    sign: float
    scale: float
    thresholds: Thresholds
    rules: list[RankRule]
    trials: dict[str, _Trial]
    pauses: dict[str, list[PauseRecord]]
    complete: Callable[..., None]
    epochs: int
    _promotable: tuple[int, list[str]] = (-1, [])

    def _pause(self, trial_id: str, trial: _Trial, verdict: Verdict, cut: Cut) -> Decision | None:
        """A pause for a trial a rank rule cut, when the module's pause rule allows one, else None."""
        c = self.config
        if not c.pause or cut.cutoff is None:
            return None
        if failure_kind(trial, c.chance, self.thresholds, self.sign) != LOW:
            return None  # an initialisation failure or at chance: hopeless as it is
        shortfall = cut.cutoff - cut.reading.value  # signed values: higher is better
        if not shortfall <= c.pause_margin * self.scale:
            return None
        value, cutoff = self.sign * cut.reading.value, self.sign * cut.cutoff
        below = "<" if self.sign > 0 else ">"
        place, _, note = cut.where.partition("; ")
        evidence = f"; {note}" if note else ""
        rule = self.rules[cut.rule]
        firm = settled(rule)
        wait = "" if firm else f" (cut among {rule.last_peers} values, < {rule.settled}: resumes at the end)"
        reason = (
            f"rank rule: below its rung at {place}; {value:.4g} {below} cutoff {cutoff:.4g}{evidence}; "
            f"paused, not pruned: within {c.pause_margin * self.scale:.3g} of the cutoff{wait}"
        )
        reading = asdict(cut.reading)
        record = PauseRecord(trial.epoch, trial.attempt, reason, shortfall, cut.rule, reading, firm)
        self.pauses.setdefault(trial_id, []).append(record)
        return Decision(PAUSE, reason, verdict, trial.attempt)

    def paused(self) -> list[str]:
        """The trials paused now, most promising first (smallest shortfall, then latest epoch)."""
        now = [(r.shortfall, -r.epoch, tid) for tid, rs in self.pauses.items() if (r := rs[-1]).open]
        return [tid for *_, tid in sorted(now)]

    def pause_record(self, trial_id: str) -> list[PauseRecord]:
        """The pauses of ``trial_id`` so far, first one first."""
        return list(self.pauses.get(trial_id, []))

    def is_paused(self, trial_id: str) -> bool:
        """Whether ``trial_id`` is paused now."""
        records = self.pauses.get(trial_id)
        return bool(records) and records[-1].open

    def promotable(self) -> list[str]:
        """The paused trials that would pass their rung now, most promising first (recomputed only
        after an epoch was observed: a rung's cutoff moves only then)."""
        if self._promotable[0] != self.epochs:
            self._promotable = (self.epochs, [tid for tid in self.paused() if self.promoted(tid)])
        return [tid for tid in self._promotable[1] if self.is_paused(tid)]

    def promoted(self, trial_id: str) -> bool:
        """Whether the paused ``trial_id`` was cut on a settled rung and would now pass it."""
        return self.is_paused(trial_id) and self.pauses[trial_id][-1].settled and self._passes(trial_id, 0.0)

    def still_near(self, trial_id: str) -> bool:
        """Whether the paused ``trial_id`` is still within ``pause_margin`` of its rung's cutoff
        now (values that reached the rung since moved it): else it can no longer matter."""
        return self._passes(trial_id, self.config.pause_margin * self.scale)

    def _passes(self, trial_id: str, slack: float) -> bool:
        """Whether the paused ``trial_id``'s reading would pass its rung now, ``slack`` below the
        cutoff allowed (False when it is not paused)."""
        if not self.is_paused(trial_id):
            return False
        record = self.pauses[trial_id][-1]
        return self.rules[record.rule].would_pass(Reading(**record.reading), slack)

    def resume(self, trial_id: str, why: str) -> None:
        """Record that the paused ``trial_id`` resumes, and ``why``."""
        if self.is_paused(trial_id):
            self.pauses[trial_id][-1].resumed = why

    def stop_paused(self, trial_id: str, why: str) -> Decision:
        """End the paused ``trial_id`` as pruned; the decision's reason says where it was paused."""
        record = self.pauses[trial_id][-1]
        record.stopped = why
        reason = f"paused at epoch {record.epoch} and not resumed: {why}"
        trial = self.trials[trial_id]
        self.complete(trial_id, trial.metric[-1] if trial.metric else None, "pruned")
        return Decision(PRUNE, reason, None, record.attempt)

    def refuse_pause(self, trial_id: str, decision: Decision, why: str) -> Decision:
        """Turn the pause ``decision`` just made into a prune (e.g. no checkpoint of the epoch to
        resume from): the reason keeps the cut and says why it was not paused."""
        record = self.pauses[trial_id].pop()
        if not self.pauses[trial_id]:
            del self.pauses[trial_id]
        reason = f"{record.reason.split('; paused')[0]}; not paused: {why}"
        return Decision(PRUNE, reason, decision.verdict, record.attempt)
