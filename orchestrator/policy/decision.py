"""What the policy tells the scheduler to do with a trial after one epoch: a typed decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.convergence import Verdict

CONTINUE, STOP, PRUNE, RESTART = "continue", "stop", "prune", "restart"


@dataclass(frozen=True)
class Decision:
    """What to do with a trial after one epoch, and why.

    ``continue`` trains on, ``stop`` ends the trial with its value counting (it converged),
    ``prune`` ends it as not worth its budget, ``restart`` trains it again from scratch. For
    ``restart``: ``attempt`` and ``seed`` are those of the new attempt and ``changes`` holds
    the hyperparameters a remedy changed (empty when none).
    """

    action: str
    reason: str
    verdict: Verdict | None = None
    attempt: int = 0
    seed: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)
