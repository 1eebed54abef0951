"""What the policy tells the scheduler to do with a trial after one epoch: a typed decision."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from analysis.convergence import Verdict

CONTINUE, STOP, PRUNE, RESTART, PAUSE = "continue", "stop", "prune", "restart", "pause"


@dataclass(frozen=True)
class Decision:
    """What to do with a trial after one epoch, and why.

    ``continue`` trains on, ``stop`` ends the trial with its value counting (it converged),
    ``prune`` ends it as not worth its budget, ``pause`` sets it aside with its checkpoint (it may
    resume later where it stopped: :mod:`orchestrator.policy.pausing`), ``restart`` trains it
    again from scratch. For
    ``restart``: ``attempt`` and ``seed`` are those of the new attempt and ``changes`` holds
    the hyperparameters a remedy changed (empty when none).
    """

    action: str
    reason: str
    verdict: Verdict | None = None
    attempt: int = 0
    seed: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)


#: What each action did to the trial, as the progress table says it.
_DONE = {STOP: "stopped", PRUNE: "pruned", RESTART: "restarted", PAUSE: "paused"}
_RANK_CUT = "rank rule: below its rung at "


#: The widest decision text (Ray's progress table shows a column this wide).
DECISION_WIDTH = 40


def decision_text(
    decision: Decision | None, width: int = DECISION_WIDTH, *, budget_done: bool = False
) -> str:
    """The decision in a few words: ``running``, ``pruned: rank rule at epoch 3``, ``pruned:
    diverged at epoch 4``, ``stopped: converged at epoch 5``, ``restarted (attempt 1): stuck``.

    A rank rule's cut keeps where it cut (``rank rule at 12.5 s (epoch 2)`` on a time clock).

    Every reason is written as ``<cause>[: details]`` (or ``<cause> (details)``, ``<cause>;
    more``); the text keeps the cause, its details dropped, the whole cut to ``width``
    characters with ``...``. A trial that continues is ``running`` whatever its verdict, or ``completed`` when
    that epoch was the last of its budget (``budget_done``: it ends having trained it all); no
    decision yet (None) is the same. The verdict stays in the result as it was: this is the action.
    """
    if decision is None or decision.action not in _DONE:
        return "completed" if budget_done else "running"
    done = _DONE[decision.action]
    if decision.action == RESTART:
        done = f"{done} (attempt {decision.attempt})"
    reason = decision.reason
    if reason.startswith(_RANK_CUT):
        cause = "rank rule at " + reason[len(_RANK_CUT) :].split(";")[0].replace(" of training", "")
    else:
        cause = re.split(r"[:;(]", reason, maxsplit=1)[0].strip()
    if not cause and decision.verdict is not None:
        cause = decision.verdict.status
    room = width - len(done) - 2
    if len(cause) > room:
        cause = cause[: max(room - 3, 0)].rstrip() + "..."
    return f"{done}: {cause}" if cause else done


def decision_data(d: Decision) -> dict[str, Any]:
    """The decision as plain, JSON-serialisable data (:func:`decision_from_data` reads it back)."""
    v = d.verdict
    verdict = None if v is None else {
        "status": v.status, "reason": v.reason, "step": v.step, "evidence": dict(v.evidence), "kind": v.kind
    }  # fmt: skip
    data = {"action": d.action, "reason": d.reason, "attempt": d.attempt, "seed": d.seed}
    return {**data, "verdict": verdict, "changes": dict(d.changes)}


def decision_from_data(data: dict[str, Any]) -> Decision:
    """The decision :func:`decision_data` wrote."""
    verdict = data.get("verdict")
    return Decision(**{**data, "verdict": Verdict(**verdict) if verdict is not None else None})


def decision_outcome(decision: Decision) -> dict[str, Any]:
    """What a searcher keeps of the decision that ended a trial: verdict, reason, attempt."""
    verdict = decision.verdict.status if decision.verdict else decision.action
    return {"verdict": verdict, "reason": decision.reason, "attempt": decision.attempt}
