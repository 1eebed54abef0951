"""How the policy uses a prior from earlier sweeps: early rungs cut what it gives almost no chance.

A rung's cut rests on raw early ranks, and keeps a patient share, until the sweep has evidence
of its own that they hold (:meth:`orchestrator.policy.rungs.AshaRungs.rung_keep` measures it).
Until then, at the epochs the prior has a model for, :class:`PriorGuard` cuts a trial the epoch
rungs keep when the prior (:class:`orchestrator.policy.prior.PriorModel`) gives it less than
``cut`` chance of finishing in the sweep's top share, and (when ``spare`` is set) spares one they
cut when it gives at least ``spare``. Once the rung's own ranks are measured, the prior no longer
counts there. A restarted attempt is judged without it. Pure (numpy and stdlib, through the model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.policy.prior import PriorModel, Reference, curve_features
from orchestrator.policy.rules import RankRule
from orchestrator.policy.rungs import AshaRungs
from orchestrator.policy.trial import _Trial


@dataclass(frozen=True)
class PriorGuard:
    """Cut a trial the rungs keep when the prior gives it less than ``cut`` chance (0: never);
    spare one they cut when it gives at least ``spare`` (None: never); only where a rung has
    no evidence of its own yet."""

    model: PriorModel
    cut: float
    spare: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.cut < 1.0:
            raise ValueError(f"cut must be in [0, 1), got {self.cut=}")
        if self.spare is not None and not self.cut < self.spare <= 1.0:
            raise ValueError(f"spare must be in (cut, 1] or None, got {self.spare=}")

    def judge(self, rules: Sequence[RankRule], trial: _Trial, sign: float, cut: bool) -> str | None:
        """Why the prior overrules the rungs on ``trial`` at its epoch (``cut``: they cut it), or None:
        ``prior at epoch 1: 1% chance of the top 10% by the prior from shipped, before ...`` (a
        cut), ``spared: 40% chance ...`` (a spared trial).

        The reference is the first epoch rule's values at the trial's epoch (its loss guard's
        for the losses); None when no epoch rung sits there, when that rung's own ranks are
        measured, for a restarted attempt, or when the chance does not overrule the rungs.
        """
        epoch = trial.epoch
        rung, guard = _epoch_rungs(rules)
        if rung is None or epoch not in rung.recorded or trial.attempt > 0 or len(trial.metric) != epoch:
            return None
        if rung.rung_keep(epoch).auc is not None:
            return None  # the sweep's own evidence outweighs the prior here
        values = [sign * v for v in trial.metric]
        neg_losses = [-v if math.isfinite(v) else -math.inf for v in trial.loss]
        reference = Reference.of(rung.recorded[epoch], guard.recorded[epoch] if guard is not None else [])
        chance = self.model.chance(epoch, curve_features(values, neg_losses, reference, trial.params))
        if chance is None or (chance < (self.spare or math.inf) if cut else chance >= self.cut):
            return None
        said = f"{chance:.0%} chance of the top {self.model.top:.0%} by the prior from {self.model.source}"
        before = f"before this sweep's epoch-{epoch} ranks are measured"
        return f"spared: {said}, {before}" if cut else f"prior at epoch {epoch}: {said}, {before}"


def _epoch_rungs(rules: Sequence[RankRule]) -> tuple[AshaRungs | None, AshaRungs | None]:
    """The first epoch rungs among ``rules`` and their loss guard (a ``GuardedRule``'s)."""
    for rule in rules:
        inner, guard = getattr(rule, "rule", rule), getattr(rule, "guard", None)
        if isinstance(inner, AshaRungs):
            return inner, guard if isinstance(guard, AshaRungs) else None
    return None, None
