"""How far a rung's ranks can be trusted, measured on the sweep's own trials: the rung's keep share.

Whether the early values of a problem rank the later ones is a property of the problem (on
LCBench's task 7593 the configurations best at epoch 1 are among the worst later; on digits they
are the best). :func:`rank_auc` measures it on the trials that reached both a rung and a later
reference rung: the chance that a *later leader* (the top ``top`` share at the reference) ranked
above a trial that did not lead, already at the rung (the area under the ROC curve of the rung's
values as a predictor of leading; 0.5: no information, 1: the leaders were all ahead). Pure
(stdlib).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: The AUC at which a rung's ranks count as fully trusted: the rung keeps only its strict share.
TRUSTED_AUC = 0.8


@dataclass(frozen=True)
class RungEvidence:
    """What a rung's keep share rests on: ``trials`` that reached the rung and ``reference``
    (None: too few yet, the prior applies), their ``auc`` (:func:`rank_auc`) and the ``keep``."""

    rung: int
    reference: int | None
    trials: int
    auc: float | None
    keep: float

    def note(self, unit: str) -> str:
        """The evidence in words, for a cut's reason."""
        share = f"keep top {self.keep:.0%}"
        if self.auc is None:
            return f"{share} until {unit}-{self.rung} ranks are measured ({self.trials} trials so far)"
        held = "held" if self.auc >= TRUSTED_AUC else "did not hold" if self.auc <= 0.5 else "partly held"
        return (
            f"{unit}-{self.rung} ranks {held} at {unit} {self.reference} "
            f"(AUC {self.auc:.2f}, {self.trials} trials): {share}"
        )


def rank_auc(early: Mapping[str, float], later: Mapping[str, float], top: float) -> float | None:
    """The AUC of ``early`` values for being in the top ``top`` share of ``later`` (keys in both).

    Leaders are the ``ceil(top * n)`` best ``later`` values of the ``n`` shared keys (ties by
    key, for a fixed answer); ties in ``early`` count one half. None when fewer than two keys
    are shared or every one leads. Values are "higher is better"; NaN counts as ``-inf``.
    """
    keys = sorted(set(early) & set(later))
    n = len(keys)
    leading = math.ceil(top * n)
    if n < 2 or leading >= n:
        return None
    ranked = sorted(keys, key=lambda k: (-_finite(later[k]), k))
    leaders = set(ranked[:leading])
    ranks = _midranks([_finite(early[k]) for k in keys])
    rank_sum = sum(r for k, r in zip(keys, ranks, strict=True) if k in leaders)
    others = n - leading
    return (rank_sum - leading * (leading + 1) / 2) / (leading * others)


def adaptive_keep(auc: float | None, strict: float, patient: float) -> float:
    """The keep share for a rung whose ranks have ``auc``: ``strict`` at :data:`TRUSTED_AUC` or
    above, ``patient`` at 0.5 or below (no better than chance), linear in between; ``patient``
    without evidence (None)."""
    if auc is None:
        return patient
    trust = min(max((auc - 0.5) / (TRUSTED_AUC - 0.5), 0.0), 1.0)
    return patient + trust * (strict - patient)


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _midranks(values: list[float]) -> list[float]:
    """1-based ranks of ``values`` (lowest first), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks
