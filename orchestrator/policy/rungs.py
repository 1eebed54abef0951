"""ASHA-style rungs over plain numbers: the rank rules of the convergence policy.

:class:`AshaRungs` judges trials at equal epochs, :class:`CostRungs` at equal training time;
both are :class:`orchestrator.policy.rules.RankRule` s. Pure (stdlib only). Values are "higher
is better" (the policy flips the sign for "min").
"""

from __future__ import annotations

import bisect
import math
import statistics
from typing import Any

from orchestrator.policy.evidence import RungEvidence, adaptive_keep, rank_auc
from orchestrator.policy.rules import EPOCHS, SECONDS, Reading


class AshaRungs:
    """Cut a trial that reaches a rung below the top ``keep`` share of the values before it there.

    Rungs sit at ``grace_period * reduction_factor**k`` epochs below ``max_t``. When a trial
    reaches a rung (once per trial) its value is compared with the values recorded there
    before it, then recorded. Asynchronous, as Ray's ``ASHAScheduler``: the first value at a
    rung always passes; a later one is cut when it is below the ``1 - keep`` quantile (linear
    interpolation) of the earlier ones. ``keep`` defaults to ``1 / reduction_factor``. NaN
    counts as the worst value.

    ``settled`` (default ``reduction_factor**2``, 9): the values a rung must hold before a
    judgement there counts as evidence. The first values at a rung are whichever trials came
    first, and a top share of few values is hardly a trial (the loss guard's ``1/9`` of fewer
    than 9 is none): :attr:`last_peers` says how many values the last judgement compared with,
    and the policy lets an unsettled judgement neither spare (the loss guard) nor promote a
    paused trial ahead of new configurations.

    ``adaptive``: how hard a rung cuts follows how well its ranks held on this sweep's trials.
    Each trial's value is kept per rung (by trial key); once ``evidence`` trials reached both a
    rung and the next one, the rung keeps between ``strict`` (default ``keep /
    sqrt(reduction_factor)``: its values ranked the next rung's leaders,
    :func:`orchestrator.policy.evidence.rank_auc` at or above ``TRUSTED_AUC``) and ``keep`` (no
    better than chance), see :func:`orchestrator.policy.evidence.adaptive_keep`. Before that
    evidence, and at the last rung (nothing later to check it against), it keeps ``keep``: a
    rung cuts harder than ASHA only on the sweep's evidence, never softer (measured on the
    replay banks, a softer cut where ranks did not hold cost epochs and no final value).
    :meth:`explain` says what the last judgement rested on.
    """

    clock = EPOCHS

    def __init__(
        self,
        grace_period: int = 1,
        reduction_factor: float = 3.0,
        max_t: int = 100,
        *,
        keep: float | None = None,
        adaptive: bool = False,
        evidence: int = 12,
        strict: float | None = None,
        unit: str = "epoch",
        settled: int | None = None,
    ) -> None:
        if evidence < 2:
            raise ValueError(f"evidence must be >= 2 trials, got {evidence=}")
        if grace_period < 1:
            raise ValueError(f"grace_period must be >= 1, got {grace_period=}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor=}")
        if max_t < grace_period:
            raise ValueError(f"max_t must be >= grace_period, got {max_t=}")
        if keep is not None and not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {keep=}")
        self.reduction_factor = reduction_factor
        self.keep = 1.0 / reduction_factor if keep is None else keep
        if strict is not None and not 0.0 < strict <= self.keep:
            raise ValueError(f"strict must be in (0, keep], got {strict=}")
        self.strict = self.keep / math.sqrt(reduction_factor) if strict is None else strict
        self.adaptive, self.evidence, self.unit = adaptive, evidence, unit
        self.settled = math.ceil(reduction_factor**2) if settled is None else settled
        if self.settled < 1:
            raise ValueError(f"settled must be >= 1 value, got {settled=}")
        self.rungs: list[int] = []
        level = float(grace_period)
        while level < max_t:
            self.rungs.append(int(level))
            level *= reduction_factor
        self.recorded: dict[int, list[float]] = {r: [] for r in self.rungs}  # sorted values
        self.seen: set[tuple[str, int]] = set()
        self.values: dict[int, dict[str, float]] = {r: {} for r in self.rungs}  # per trial key
        self.last: RungEvidence | None = None  # what the last judgement rested on
        self.last_cutoff: float | None = None  # the cutoff of the last judgement
        self.last_peers = 0  # the values the last judgement compared with
        self._keeps: dict[int, RungEvidence] = {}  # rung -> its keep share until a value is recorded

    def rung_keep(self, rung: int) -> RungEvidence:
        """The keep share of ``rung`` now and its evidence (``keep`` unless ``adaptive``); kept
        until the next value is recorded (a paused trial's promotion asks often)."""
        if rung not in self._keeps:
            self._keeps[rung] = self._rung_keep(rung)
        return self._keeps[rung]

    def _rung_keep(self, rung: int) -> RungEvidence:
        later = self.rungs.index(rung) + 1
        if not self.adaptive or later == len(self.rungs):
            return RungEvidence(rung, None, 0, None, self.keep)
        reference = self.rungs[later]
        early, late = self.values[rung], self.values[reference]
        shared = len(early.keys() & late.keys())
        if shared < self.evidence:
            return RungEvidence(rung, None, shared, None, self.keep)
        auc = rank_auc(early, late, self.keep)
        return RungEvidence(rung, reference, shared, auc, adaptive_keep(auc, self.strict, self.keep))

    def explain(self) -> str:
        """The evidence the last judgement's keep share rested on ("" when not adaptive)."""
        return "" if self.last is None or not self.adaptive else self.last.note(self.unit)

    def cutoff(self, epoch: int) -> float | None:
        """The value a trial reaching rung ``epoch`` now must reach, None while it is empty."""
        values = self.recorded[epoch]
        if not values:
            return None
        self.last = self.rung_keep(epoch)
        return _quantile(values, 1.0 - self.last.keep)

    def would_pass(self, reading: Reading, slack: float = 0.0) -> bool:
        """Whether the reading's value plus ``slack``, judged at its epoch's rung, clears that
        rung's cutoff now (the values recorded there, its own left out once); False where it was
        not judged."""
        return self.passes_now(reading.key, reading.epoch, reading.value + slack)

    def passes_now(self, trial_id: str, rung: int, value: float) -> bool:
        """``value`` of ``trial_id`` against the cutoff of ``rung`` now, its own recorded value left out."""
        if rung not in self.recorded or (trial_id, rung) not in self.seen:
            return False
        value = value if math.isfinite(value) else -math.inf
        others = list(self.recorded[rung])
        own = self.values[rung].get(trial_id, value)
        if own in others:
            others.remove(own)
        if not others:
            return True
        return value >= _quantile(others, 1.0 - self.rung_keep(rung).keep)

    def prune(self, reading: Reading) -> bool:
        """Judge the reading's value at its epoch (see :meth:`should_prune`)."""
        return self.should_prune(reading.key, reading.epoch, reading.value)

    def calibrate(self, epoch_seconds: float | None) -> None:
        """Nothing to calibrate: epochs are the unit."""

    def should_prune(self, trial_id: str, epoch: int, value: float) -> bool:
        """Record ``value`` when ``epoch`` is a rung (once per trial) and say whether it is cut
        (not judged: :attr:`last_peers` and :attr:`last_cutoff` say so, 0 and None)."""
        if epoch not in self.recorded or (trial_id, epoch) in self.seen:
            return self.unjudged()
        return self.judge(trial_id, epoch, value)

    def unjudged(self) -> bool:
        """Say that the last reading was not judged (no cutoff, no values compared): False."""
        self.last_peers, self.last_cutoff = 0, None
        return False

    def judge(self, trial_id: str, rung: int, value: float) -> bool:
        """Compare ``value`` with the cutoff of ``rung``, then record it there for ``trial_id``."""
        self.seen.add((trial_id, rung))
        value = value if math.isfinite(value) else -math.inf
        cutoff = self.last_cutoff = self.cutoff(rung)
        self.last_peers = len(self.recorded[rung])
        bisect.insort(self.recorded[rung], value)
        self.values[rung][trial_id] = value
        self._keeps.clear()
        return cutoff is not None and value < cutoff

    def state_dict(self) -> dict[str, Any]:
        return {
            "recorded": {str(r): v for r, v in self.recorded.items()},
            "seen": sorted([list(s) for s in self.seen]),
            "values": {str(r): dict(v) for r, v in self.values.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._keeps.clear()
        self.recorded = {int(r): list(v) for r, v in state["recorded"].items()}
        self.seen = {(str(t), int(e)) for t, e in state["seen"]}
        self.values = {int(r): {str(k): float(x) for k, x in v.items()} for r, v in state["values"].items()}


class CostRungs:
    """ASHA-style rungs over training time: trials are compared at equal compute, not equal epochs.

    The caller measures a trial's training time in seconds, and may leave out start-up work
    (the policy does not count a trial's first epoch, which also loads data, compiles and warms
    up a fresh worker). Rungs sit at ``grace_period * reduction_factor**k`` time units below
    ``max_t`` units, a unit being the median of the epoch durations passed to
    :meth:`calibrate` for the first ``calibration`` trials (no cut before then). A trial is
    judged when its training time first reaches a rung — the highest rung it has crossed and
    not been judged at, as Ray's ``ASHAScheduler`` with ``time_attr="time_total_s"`` — against
    the values recorded there before it, with the cutoff of :class:`AshaRungs`. A trial whose
    epochs cost three times the usual is judged at the 3-unit rung after one epoch, against
    what cheaper trials reached in the same time. NaN counts as the worst value; a missing,
    non-positive or non-finite duration calibrates nothing.
    """

    clock = SECONDS

    def __init__(
        self,
        grace_period: int = 1,
        reduction_factor: float = 3.0,
        max_t: int = 100,
        *,
        keep: float | None = None,
        calibration: int = 4,
        adaptive: bool = False,
    ) -> None:
        if calibration < 1:
            raise ValueError(f"calibration must be >= 1, got {calibration=}")
        self._epochs = AshaRungs(  # rungs in units
            grace_period, reduction_factor, max_t, keep=keep, adaptive=adaptive, unit="unit"
        )
        self.keep = self._epochs.keep
        self.calibration = calibration
        self.durations: list[float] = []  # epoch seconds taken for the unit
        self.unit: float | None = None

    def calibrate(self, epoch_seconds: float | None) -> None:
        """Take one trial's epoch duration until ``calibration`` of them fix the unit."""
        if self.unit is not None or epoch_seconds is None:
            return
        if not (math.isfinite(epoch_seconds) and epoch_seconds > 0.0):
            return
        self.durations.append(float(epoch_seconds))
        if len(self.durations) >= self.calibration:
            self.unit = statistics.median(self.durations)

    def prune(self, reading: Reading) -> bool:
        """Judge the reading's value at its training time (see :meth:`should_prune`)."""
        return self.should_prune(reading.key, reading.seconds, reading.value)

    def should_prune(self, trial_id: str, seconds: float, value: float) -> bool:
        """Judge ``value`` at the highest rung ``seconds`` of training have crossed, once per rung."""
        if self.unit is None or not math.isfinite(seconds):
            return self._epochs.unjudged()
        crossed = [r for r in self._epochs.rungs if seconds >= r * self.unit]
        if not crossed or (trial_id, crossed[-1]) in self._epochs.seen:
            return self._epochs.unjudged()
        return self._epochs.judge(trial_id, crossed[-1], value)

    def explain(self) -> str:
        """The evidence the last judgement's keep share rested on (see :meth:`AshaRungs.explain`)."""
        return self._epochs.explain()

    @property
    def last_cutoff(self) -> float | None:
        """The cutoff of the last judgement."""
        return self._epochs.last_cutoff

    @property
    def last_peers(self) -> int:
        """The values the last judgement compared with."""
        return self._epochs.last_peers

    @property
    def settled(self) -> int:
        """The values a rung holds before a judgement there counts (see :class:`AshaRungs`)."""
        return self._epochs.settled

    def would_pass(self, reading: Reading, slack: float = 0.0) -> bool:
        """Whether the reading (plus ``slack``), judged at the highest rung its training time
        crossed, clears it now."""
        if self.unit is None or not math.isfinite(reading.seconds):
            return False
        crossed = [r for r in self._epochs.rungs if reading.seconds >= r * self.unit]
        return bool(crossed) and self._epochs.passes_now(reading.key, crossed[-1], reading.value + slack)

    def state_dict(self) -> dict[str, Any]:
        return {"rungs": self._epochs.state_dict(), "durations": list(self.durations), "unit": self.unit}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._epochs.load_state_dict(state["rungs"])
        self.durations = [float(v) for v in state["durations"]]
        self.unit = None if state["unit"] is None else float(state["unit"])


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` by linear interpolation (no ``inf - inf``)."""
    position = q * (len(values) - 1)
    low = int(position)
    lo, hi = values[low], values[min(low + 1, len(values) - 1)]
    if lo == hi or lo == -math.inf:  # the limit of the interpolation; no inf - inf
        return lo
    return lo + (position - low) * (hi - lo)
