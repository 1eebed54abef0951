"""The ``oracle`` reference: a scheduler that knows the bank, a bound on what stopping can save.

It is not a method: it reads the answer. It stops every trial whose configuration never gets
within ``TARGET_TOLERANCE`` of the bank's best final (in its seed-0 run) after ``epochs`` epochs
and lets the others run to their budget. No scheduler that must stop trials without knowing the
future can reach the compute to target faster by stopping alone; the replay prints it beside the
real schedulers so that their gap to the bound is measured in the same run.

``gap_closed`` measures it: the share of ASHA's distance to the bound, in median time to target
(``compute_to_target``), that a scheduler closes: ``(asha - ours) / (asha - oracle)``; 1 is the
bound, 0 is ASHA, negative is slower than ASHA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from benchmarks.bank import Bank
from benchmarks.metrics import BASELINE, TARGET_TOLERANCE

_SLACK = 1e-9
ORACLE = "oracle"


def hitters(bank: Bank) -> set[str]:
    """The ``config_id`` of every configuration whose seed-0 run ever reaches the target."""
    threshold = bank.target - TARGET_TOLERANCE - _SLACK
    return {c.config_id for c in bank.configs if max(c.runs[0].val_acc) >= threshold}


class OracleScheduler(FIFOScheduler):
    """Stop non-hitting configurations after ``epochs`` epochs; let hitters run to their budget.

    Args:
        hitting: The ``config_id`` values that reach the target (:func:`hitters`).
        epochs: Epochs a non-hitting configuration trains before it is stopped (>= 1).
    """

    def __init__(self, hitting: set[str], epochs: int = 1) -> None:
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs=}")
        self._hitting = set(hitting)
        self._epochs = epochs

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """CONTINUE a hitter; STOP anything else once it has trained ``epochs`` epochs."""
        if trial.config.get("config_id") in self._hitting or result["training_iteration"] < self._epochs:
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP


def gap_closed(summaries: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    """Return ``(asha - t) / (asha - oracle)`` over median times to target ``t`` of ``name``.

    ``None`` when ``asha`` or ``oracle`` did not run, when ``asha``, ``oracle`` or ``name`` does
    not reach the target in its median repeat (``compute_to_target`` is ``None``; the counts of
    repeats reaching it, ``reached_target``, compare them then), or when ``asha == oracle``.
    """
    if BASELINE not in summaries or ORACLE not in summaries:
        return None
    asha = summaries[BASELINE]["compute_to_target"]
    bound = summaries[ORACLE]["compute_to_target"]
    ours = summaries[name]["compute_to_target"]
    if asha is None or bound is None or ours is None or asha == bound:
        return None
    return (asha - ours) / (asha - bound)


def asha_misses_target(summaries: Mapping[str, Mapping[str, Any]]) -> bool:
    """Return whether ``asha`` ran and its median repeat never reaches the target."""
    return BASELINE in summaries and summaries[BASELINE]["compute_to_target"] is None
