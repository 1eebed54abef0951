"""The report's tables: one per factor that varied in the sweep, and one of the decisions taken.

A factor (:mod:`analysis.factors`: optimizer, learning-rate decade, depth, activation,
initialization, regularization, batch size, and every other hyperparameter by value or in
quantile bins) groups the trials by its value; each row counts trials, converged ones and their
median epochs to converge, best and median final value, median decay rate, stuck / diverged /
restart counts and median seconds per epoch. The decision table sums epochs run, budgeted and
saved per final status and verdict. A :class:`Table` prints as text, Markdown or plain data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.factors import FACTORS, NOT_SET, free_factors
from analysis.records import STATUSES, TrialRecord
from analysis.stats import TrialStats

_NA = "-"


FACTOR_HEADERS = (
    "trials", "converged", "median epochs to converge", "best", "median", "median decay rate",
    "stuck", "diverged", "restarts", "median s/epoch",
)  # fmt: skip


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _best(values: list[float], sign: float) -> float | None:
    if not values:
        return None
    return max(values) if sign > 0 else min(values)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is NOT_SET:
        return (3, "")
    if value == "none":
        return (0, "")
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


@dataclass
class Table:
    """A titled table of plain values (None prints as '-')."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        return [[_fmt(v) for v in row] for row in self.rows]

    def text(self) -> str:
        """Aligned plain text for a terminal."""
        cells = self.cells()
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(self.headers)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True))
        body = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in cells
        ]
        return "\n".join([self.title, line, "-" * len(line), *body])

    def markdown(self) -> str:
        head = "| " + " | ".join(self.headers) + " |"
        rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"
        body = ["| " + " | ".join(r) + " |" for r in self.cells()]
        return "\n".join([f"### {self.title}", "", head, rule, *body])

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "headers": list(self.headers), "rows": [list(r) for r in self.rows]}


def _fmt(value: Any) -> str:
    if value is None:
        return _NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def factor_table(
    stats: list[TrialStats],
    title: str,
    key: Callable[[dict[str, Any]], Any],
    label: Callable[[Any], str],
    sign: float,
) -> Table | None:
    """One row per value of the factor; None when the factor is missing or did not vary."""
    groups: dict[Any, list[TrialStats]] = {}
    for s in stats:
        value = key(s.trial.params)
        if value is not None:
            groups.setdefault(value, []).append(s)
    if len(groups) < 2:
        return None
    table = Table(f"by {title}", (title, *FACTOR_HEADERS))
    for value in sorted(groups, key=_sort_key):
        group = groups[value]
        finals = [s.value for s in group if s.value is not None]
        table.rows.append(
            (
                label(value),
                len(group),
                sum(s.converged for s in group),
                _median([s.convergence_epoch for s in group if s.converged]),
                _best(finals, sign),
                _median(finals),
                _median([s.decay_rate for s in group if s.decay_rate is not None]),
                sum(
                    s.trial.verdict == "stuck" or any("stuck" in r for r in s.trial.restart_reasons)
                    for s in group
                ),
                sum(s.trial.verdict == "diverged" for s in group),
                sum(s.restarts for s in group),
                _median([s.epoch_s for s in group if s.epoch_s is not None]),
            )
        )
    return table


def factor_tables(stats: list[TrialStats], sign: float) -> tuple[list[Table], dict[str, str]]:
    """The table of every factor that varied: the named factors in their order, then one per
    other hyperparameter sorted by name (:func:`analysis.factors.free_factors`); and, by title,
    the printed value of each factor that every trial had the same."""
    tables, fixed = [], {}
    for title, key, label in (*FACTORS, *free_factors([s.trial.params for s in stats])):
        table = factor_table(stats, title, key, label, sign)
        if table is not None:
            tables.append(table)
            continue
        values = {key(s.trial.params) for s in stats} - {None}
        if len(values) == 1:
            fixed[title] = label(values.pop())
    return tables, fixed


def decision_label(t: TrialRecord) -> str:
    """``CONVERGED``, ``PRUNED (diverged)``, ``PRUNED (rank rule)``, ``PRUNED (prior)``,
    ``COMPLETED`` ...: the final status and, for a pruned trial, the verdict or the inner rank rule
    (or the prior from earlier sweeps) behind it."""
    if t.status == "PRUNED" and (t.decision_reason or "").startswith("rank rule"):
        return "PRUNED (rank rule)"
    if t.status == "PRUNED" and (t.decision_reason or "").startswith("prior at epoch"):
        return "PRUNED (prior)"
    if t.status == "PRUNED" and t.verdict:
        return f"PRUNED ({t.verdict})"
    return t.status


def decision_table(stats: list[TrialStats]) -> Table:
    """Trials, epochs run and epochs saved per decision (saved = budget - epochs run, summed)."""
    groups: dict[str, list[TrialStats]] = {}
    for s in stats:
        groups.setdefault(decision_label(s.trial), []).append(s)
    order = {status: i for i, status in enumerate(STATUSES)}
    table = Table(
        "decisions", ("decision", "trials", "epochs run", "epochs budgeted", "epochs saved", "restarts")
    )
    for label in sorted(groups, key=lambda g: (order.get(g.split(" ")[0], 99), g)):
        group = groups[label]
        table.rows.append(
            (
                label,
                len(group),
                sum(s.trial.epochs_run for s in group),
                sum(s.trial.budget for s in group),
                sum(s.saved for s in group),
                sum(s.restarts for s in group),
            )
        )
    table.rows.append(
        (
            "all",
            len(stats),
            sum(s.trial.epochs_run for s in stats),
            sum(s.trial.budget for s in stats),
            sum(s.saved for s in stats),
            sum(s.restarts for s in stats),
        )
    )
    return table
