"""Rank rules: cut a trial that ranks low among the others at the same point, composed as a list.

The policy consults its rank rules, in order, on every epoch that the curve's diagnosis leaves
undecided (``orchestrator.policy.engine``). A rule sees a :class:`Reading` of the trial, judges
it on its own clock (epochs, or seconds of training), and records the value it judged, so
every rule of the list is always consulted. A rule with a guard is :class:`GuardedRule`: the
guard, judging the trial's loss at the same point, spares a trial it would keep once its
judgement is settled. Pure (stdlib).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

EPOCHS, SECONDS = "epochs", "seconds"


@dataclass(frozen=True)
class Reading:
    """A trial at one epoch as a rank rule sees it; both values are "higher is better".

    Args:
        key: the trial and its attempt (a restarted attempt meets the rungs again).
        epoch: the epoch of the current attempt.
        seconds: the attempt's training time so far (its epochs after the first).
        value: the metric, signed so that higher is better (NaN: the worst).
        neg_loss: minus the loss (``-inf`` when the loss is not finite).
    """

    key: str
    epoch: int
    seconds: float
    value: float
    neg_loss: float

    def place(self, clock: str) -> str:
        """The point a rule on ``clock`` judges, for a reason: "epoch 3", "12.5 s of training (epoch 2)"."""
        if clock == EPOCHS:
            return f"epoch {self.epoch}"
        return f"{self.seconds:.3g} s of training (epoch {self.epoch})"

    def of_loss(self) -> Reading:
        """The same reading with the loss (``neg_loss``) as the value judged."""
        return replace(self, value=self.neg_loss)


class RankRule(Protocol):
    """Cuts a trial that ranks below the others at the same point of ``clock``.

    ``clock`` is :data:`EPOCHS` or :data:`SECONDS`. :meth:`prune` records the reading's value
    (once per trial and point) and says whether the trial is cut; :meth:`calibrate` takes the
    duration of a trial's second epoch (rules on seconds fix their unit from it; rules on
    epochs ignore it); :meth:`explain` says what the last judgement rested on, for a cut's
    reason ("" when nothing to add). :attr:`last_cutoff` is the value the last judged reading had
    to reach (None: the rung was empty), :attr:`last_peers` how many values it was compared with
    (a judgement is *settled* from :attr:`settled` values on: :func:`settled`),
    :meth:`would_pass` whether a reading judged earlier (its value plus a slack) would pass its
    rung now that later values arrived (a paused trial's promotion). The state
    is plain, JSON-serialisable data.
    """

    clock: str
    settled: int

    @property
    def last_cutoff(self) -> float | None: ...

    @property
    def last_peers(self) -> int: ...

    def prune(self, reading: Reading) -> bool: ...

    def would_pass(self, reading: Reading, slack: float = 0.0) -> bool: ...

    def calibrate(self, epoch_seconds: float | None) -> None: ...

    def explain(self) -> str: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def settled(rule: RankRule) -> bool:
    """Whether ``rule``'s last judgement compared with enough values to count as evidence."""
    return rule.last_peers >= rule.settled


@dataclass
class GuardedRule:
    """``rule`` cuts a trial unless ``guard``, judging the trial's loss, keeps it; both record.

    Both always see the reading, so the guard records the loss at every point the rule judges,
    as the rule records the metric. A metric that lags its loss often catches up: a trial whose
    loss ranks near the top (the guard's ``keep`` share) is spared, once the guard's rung holds
    its ``settled`` values (before that, its top share is whichever losses came first). The guard
    judges on the rule's clock.
    """

    rule: RankRule
    guard: RankRule

    def __post_init__(self) -> None:
        if self.guard.clock != self.rule.clock:
            raise ValueError(f"the guard must judge on the rule's clock, got {self.guard.clock=}")

    @property
    def clock(self) -> str:
        return self.rule.clock

    def prune(self, reading: Reading) -> bool:
        """Cut when the rule cuts the metric and the guard would cut the loss too or its
        judgement is not settled."""
        cut = self.rule.prune(reading)
        spared = not self.guard.prune(reading.of_loss())
        return cut and not (spared and settled(self.guard))

    @property
    def last_cutoff(self) -> float | None:
        """The rule's last cutoff (the guard only spares)."""
        return self.rule.last_cutoff

    @property
    def last_peers(self) -> int:
        """The values the rule's last judgement compared with."""
        return self.rule.last_peers

    @property
    def settled(self) -> int:
        """The values the rule's rungs hold before a judgement there counts."""
        return self.rule.settled

    def would_pass(self, reading: Reading, slack: float = 0.0) -> bool:
        """The rule would pass the reading (its value plus ``slack``) now, or the guard would
        spare its loss now."""
        return self.rule.would_pass(reading, slack) or self.guard.would_pass(reading.of_loss())

    def calibrate(self, epoch_seconds: float | None) -> None:
        """Calibrate both the rule and the guard."""
        self.rule.calibrate(epoch_seconds)
        self.guard.calibrate(epoch_seconds)

    def explain(self) -> str:
        """The rule's evidence (the guard only spares)."""
        return self.rule.explain()

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.state_dict(), "guard": self.guard.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rule.load_state_dict(state["rule"])
        self.guard.load_state_dict(state["guard"])
