"""The convergence report of a sweep: which factors made trials converge, fail or stall.

Computed from a :class:`SweepRecord` (pure: numpy, plus Optuna for the importance):

- per trial: the final value, the **convergence epoch** (:func:`analysis.convergence.convergence_epoch`
  on the last attempt's metric curve, with the sweep's thresholds), the **decay rate** of the
  training loss (:func:`decay_rate`), the median epoch time, restarts and whether they helped;
- one table per factor that varied in the sweep (optimizer, learning-rate decade, depth,
  activation, initialization, regularization, batch size, then every other hyperparameter that
  varied, by name: by value, or in quantile bins when it takes many numeric values, see
  :mod:`analysis.factors`; trials that do not set it in a ``(not set)`` row): trial counts,
  how many converged (a convergence epoch, and not ended stuck or diverged), the median epochs
  to converge of those, best and median final value, median decay rate, stuck / diverged
  counts and median seconds per epoch;
- the decisions: trials, epochs run and epochs saved (against running every trial once to
  its budget) per final status and verdict; restarts and how many helped;
- hyperparameter importance (Optuna's default evaluator on a study of the finished trials).

The per-trial numbers live in :mod:`analysis.stats`, the grouping in :mod:`analysis.factors`, the
tables in :mod:`analysis.tables` and the importance in :mod:`analysis.importance`; their public
names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analysis.factors import FACTORS, free_factors
from analysis.front import front_table
from analysis.importance import importance
from analysis.records import SweepRecord
from analysis.stats import TrialStats, decay_rate, thresholds_of, trial_stats
from analysis.tables import (
    FACTOR_HEADERS,
    Table,
    decision_label,
    decision_table,
    factor_table,
    factor_tables,
)

__all__ = [
    "FACTORS", "FACTOR_HEADERS", "Report", "Table", "TrialStats", "build", "decay_rate", "decision_label",
    "decision_table", "factor_table", "factor_tables", "free_factors", "importance", "thresholds_of",
    "trial_stats",
]  # fmt: skip


@dataclass
class Report:
    """Everything a report shows; :meth:`text` and :meth:`markdown` print it."""

    sweep: SweepRecord
    stats: list[TrialStats]
    factors: list[Table]
    fixed: dict[str, str]
    decisions: Table
    importance: dict[str, float] | None

    @property
    def best(self) -> TrialStats | None:
        finals = [s for s in self.stats if s.value is not None]
        if not finals:
            return None
        return max(finals, key=lambda s: s.value * self.sweep.sign)  # type: ignore[operator]

    def summary(self) -> dict[str, Any]:
        """The sweep's headline numbers (also logged as the parent run's metrics)."""
        run = sum(s.trial.epochs_run for s in self.stats)
        budget = sum(s.trial.budget for s in self.stats)
        restarted = [s for s in self.stats if s.restarts]
        best = self.best
        return {
            "trials": len(self.stats),
            "best_value": best.value if best else None,
            "best_trial": best.trial.name if best else None,
            "epochs_run": run,
            "epochs_budget": budget,
            "epochs_saved": budget - run,
            "epochs_saved_frac": (budget - run) / budget if budget else None,
            "converged_trials": sum(s.converged for s in self.stats),
            "restarts": sum(s.restarts for s in self.stats),
            "restarted_trials": len(restarted),
            "restarts_helped": sum(bool(s.helped) for s in restarted),
        }

    def importance_table(self) -> Table | None:
        if not self.importance:
            return None
        rows = [(k, v) for k, v in sorted(self.importance.items(), key=lambda kv: -kv[1])]
        return Table("hyperparameter importance (Optuna)", ("hyperparameter", "importance"), rows)

    def trials_table(self) -> Table:
        table = Table(
            "trials",
            (
                "trial",
                "decision",
                self.sweep.metric,
                "epochs",
                "attempts",
                "converged at",
                "decay rate",
                "reason",
            ),
        )
        for s in self.stats:
            t = s.trial
            table.rows.append(
                (
                    t.name,
                    decision_label(t),
                    s.value,
                    t.epochs_run,
                    len(t.attempts),
                    s.convergence_epoch,
                    s.decay_rate,
                    (t.reason or "")[:70] or None,
                )
            )
        return table

    def tables(self) -> list[Table]:
        front = front_table(self.sweep)  # several objectives: the Pareto front first
        out = [*([front] if front is not None else []), self.decisions, *self.factors]
        if (imp := self.importance_table()) is not None:
            out.append(imp)
        return out

    def _headline(self) -> list[str]:
        s = self.summary()
        best = "none" if s["best_value"] is None else f"{s['best_value']:.4f} ({s['best_trial']})"
        saved = "" if s["epochs_saved_frac"] is None else f" ({s['epochs_saved_frac']:.0%} saved)"
        lines = [
            f"sweep '{self.sweep.name}' from {self.sweep.source}",
            f"{s['trials']} trials; best {self.sweep.metric} ({self.sweep.mode}) {best}",
            f"epochs: {s['epochs_run']} run of {s['epochs_budget']} budgeted{saved}; "
            f"{s['converged_trials']} trials ended on a plateau (converged)",
            f"restarts: {s['restarts']} in {s['restarted_trials']} trials, "
            f"{s['restarts_helped']} ended better than their first attempt",
        ]
        if self.fixed:
            lines.append("fixed: " + ", ".join(f"{k}={v}" for k, v in self.fixed.items()))
        return lines

    def text(self) -> str:
        """The report for a terminal."""
        return "\n\n".join(["\n".join(self._headline()), *(t.text() for t in self.tables())]) + "\n"

    def markdown(self, images: Sequence[str] = ()) -> str:
        """The report as Markdown, with the plot files ``images`` (relative paths) embedded."""
        parts = [
            f"# Convergence report: {self.sweep.name}",
            "\n".join(f"- {line}" for line in self._headline()),
        ]
        parts += [t.markdown() for t in self.tables()]
        parts += [f"![{img}]({img})" for img in images]
        parts.append(self.trials_table().markdown())
        return "\n\n".join(parts) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """Every number of the report as plain JSON-able data."""
        return {
            "sweep": self.sweep.name,
            "source": self.sweep.source,
            "metric": self.sweep.metric,
            "mode": self.sweep.mode,
            "summary": self.summary(),
            "tables": [t.as_dict() for t in self.tables()],
            "trials": self.trials_table().as_dict(),
            "importance": self.importance,
        }


def build(sweep: SweepRecord, *, with_importance: bool = True) -> Report:
    """The report of a sweep."""
    stats = trial_stats(sweep)
    factors, fixed = factor_tables(stats, sweep.sign)
    imp = None
    if with_importance:
        try:
            imp = importance(sweep)
        except (ValueError, RuntimeError):  # too few distinct values for the evaluator
            imp = None
    return Report(sweep, stats, factors, fixed, decision_table(stats), imp)
