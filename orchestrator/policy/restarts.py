"""The sweep's record of its restarts, per kind of failure: the evidence that decides the next one.

A restart pays when its attempt ended better than the attempt it replaced by more than the
chance margin. Whether a failure is worth a restart is a property of the problem (on most
problems a configuration that fails with one seed fails with every seed; on small networks
with many local minima, or deep plain ReLU networks born dead, it does not), so the sweep
learns it from its own restarts, separately for each kind of failure (:data:`KINDS`):

- the first ``trust`` restarts of a kind happen on trust (the prior: without them nothing
  could ever be learned);
- after that, a kind restarts while at least ``success`` of its finished restarts paid; while
  none has finished yet, it waits (no restart).

A restart that is not better than the attempt it replaced where that one ended (same epoch)
is cut there (:func:`unpaid_restart`): a failed bet costs no more epochs than the failure.
A trial that is cut (ranked low, predicted worse) failed in the kind :func:`failure_kind` reads
from its last epoch.

Pure (stdlib only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analysis.convergence import Thresholds, Verdict
    from orchestrator.policy.config import PolicyConfig
    from orchestrator.policy.trial import _Trial

#: Kinds of failure, each with its own record: a collapse back to chance after learning; stuck
#: with dead ReLUs or a vanishing gradient (evidence against the initialisation); stuck
#: otherwise (at chance, no progress); converged or heading far below the leader (a local
#: minimum).
COLLAPSED, DEAD, STUCK_KIND, LOW = "collapsed", "dead_units", "stuck", "local_minimum"
KINDS = (COLLAPSED, DEAD, STUCK_KIND, LOW)


@dataclass
class RestartRecord:
    """Per kind of failure: restarts started, finished, and finished that paid."""

    started: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)
    paid: dict[str, int] = field(default_factory=dict)

    def judge(self, kind: str, trust: int, success: float) -> tuple[bool, str]:
        """Whether a failure of ``kind`` restarts now, and the evidence, in words (see the module)."""
        started, finished, paid = (self._count(c, kind) for c in (self.started, self.finished, self.paid))
        if started < trust:
            return True, f"{kind} restart {started + 1} of {trust} on trust"
        if finished == 0:
            return False, f"no {kind} restart has finished yet ({started} running)"
        share = paid / finished
        verb = "paid" if share >= success else "paid only"
        return share >= success, f"{kind} restarts {verb} {paid} of {finished} (needs {success:.0%})"

    def start(self, kind: str) -> None:
        """Count a restart of ``kind`` begun."""
        self.started[kind] = self._count(self.started, kind) + 1

    def finish(self, kind: str, paid: bool) -> None:
        """Count a restart of ``kind`` ended, and whether it paid."""
        self.finished[kind] = self._count(self.finished, kind) + 1
        self.paid[kind] = self._count(self.paid, kind) + int(paid)

    def totals(self) -> tuple[int, int]:
        """(finished, paid) over every kind."""
        return sum(self.finished.values()), sum(self.paid.values())

    def state_dict(self) -> dict[str, Any]:
        return {"started": dict(self.started), "finished": dict(self.finished), "paid": dict(self.paid)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("started", "finished", "paid"):
            setattr(self, name, {str(k): int(v) for k, v in state[name].items()})

    @staticmethod
    def _count(counts: dict[str, int], kind: str) -> int:
        return counts.get(kind, 0)


def failure_kind(trial: _Trial, chance: float | None, th: Thresholds, sign: float) -> str:
    """The kind of failure of a trial that is cut: dead units (its last epoch's dead fraction at
    or above ``th.dead_frac``, or its gradient norm below ``th.vanishing_grad``), stuck (its
    last metric not better than chance by more than ``th.chance_margin``: at chance, worse than
    a guess, or NaN; ``sign`` is +1 when higher is better, -1 when lower is), else a local
    minimum (it learned, less than the others)."""
    dead = bool(trial.dead) and trial.dead[-1] >= th.dead_frac
    vanishing = bool(trial.grad) and trial.grad[-1] < th.vanishing_grad
    if dead or vanishing:
        return DEAD
    if chance is not None and trial.metric and not sign * (trial.metric[-1] - chance) > th.chance_margin:
        return STUCK_KIND
    return LOW


def unpaid_restart(trial: _Trial, sign: float, margin: float) -> str | None:
    """Why a restarted attempt is cut (None: it is not): at the epoch where the attempt it
    replaced ended, its metric is not better than that attempt's final by more than ``margin``
    (``sign`` makes higher better)."""
    if trial.attempt == 0 or not trial.metric:
        return None
    before = trial.lineage[-2]
    if before.final is None or not math.isfinite(before.final) or trial.epoch != before.epochs:
        return None
    now = trial.metric[-1]
    if sign * (now - before.final) > margin:
        return None
    return (
        f"restart did not pay: {now:.4g} at epoch {trial.epoch}, where the attempt it replaced "
        f"ended at {before.final:.4g}"
    )


def remedy(config: PolicyConfig, params: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """The hyperparameters a restart changes: ``lr`` times ``remedy_lr_factor`` for an
    oscillating trial, ``leaky_relu`` for a ReLU trial stuck with dead units (when
    ``remedy_leaky_relu``); nothing otherwise."""
    if verdict.status == "oscillating" and config.remedy_lr_factor is not None and "lr" in params:
        return {"lr": float(params["lr"]) * config.remedy_lr_factor}
    dead = verdict.kind == "dead_relu" and config.remedy_leaky_relu
    if dead and params.get("activation") == "relu":
        return {"activation": "leaky_relu"}
    return {}
