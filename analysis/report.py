"""The convergence report of a sweep: which factors made trials converge, fail or stall.

Computed from a :class:`SweepRecord` (pure: numpy, plus Optuna for the importance):

- per trial: the final value, the **convergence epoch** (:func:`analysis.convergence.convergence_epoch`
  on the last attempt's metric curve, with the sweep's thresholds), the **decay rate** of the
  training loss (:func:`decay_rate`), the median epoch time, restarts and whether they helped;
- one table per factor that varied in the sweep (optimizer, learning-rate decade, depth,
  activation, initialization, regularization, batch size): trial counts, how many converged
  (a convergence epoch, and not ended stuck or diverged), the median epochs to converge of
  those, best and median final value, median decay rate, stuck / diverged counts and median
  seconds per epoch;
- the decisions: trials, epochs run and epochs saved (against running every trial once to
  its budget) per final status and verdict; restarts and how many helped;
- hyperparameter importance (Optuna's default evaluator on a study of the finished trials).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from analysis.convergence import DEFAULT_THRESHOLDS, Thresholds, convergence_epoch
from analysis.records import STATUSES, SweepRecord, TrialRecord

_NA = "-"


def decay_rate(loss: Sequence[float], until: int | None = None) -> float | None:
    """The loss's exponential decay rate per epoch: minus the slope of the least-squares line
    through ``ln(loss)`` against the epoch, over epochs 1..``until`` (default all).

    Only finite, positive losses count; fewer than 3 of them give None. ``2 * exp(-0.3 * t)``
    has rate 0.3; a flat loss 0; a rising one a negative rate.
    """
    ys = np.asarray(list(loss)[: until if until is not None else None], dtype=float)
    ts = np.arange(1, len(ys) + 1, dtype=float)
    ok = np.isfinite(ys) & (ys > 0)
    if ok.sum() < 3:
        return None
    slope = np.polyfit(ts[ok], np.log(ys[ok]), 1)[0]
    return float(-slope)


def thresholds_of(sweep: SweepRecord) -> Thresholds:
    """The sweep's thresholds (its overrides over the defaults; unknown names are ignored)."""
    names = {f.name for f in fields(Thresholds)}
    given = {k: v for k, v in sweep.thresholds.items() if k in names}
    try:
        return Thresholds(**given) if given else DEFAULT_THRESHOLDS
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLDS


@dataclass(frozen=True)
class TrialStats:
    """The numbers a report reads off one trial."""

    trial: TrialRecord
    value: float | None
    convergence_epoch: int | None
    decay_rate: float | None
    epoch_s: float | None
    restarts: int
    helped: bool | None  # None: not restarted, or no comparable values

    @property
    def converged(self) -> bool:
        """The last attempt ends on a plateau and the trial did not end stuck or diverged (a curve
        flat at chance level has a plateau too, but it stalled rather than converged)."""
        return self.convergence_epoch is not None and self.trial.verdict not in ("stuck", "diverged")

    @property
    def saved(self) -> int:
        """Epochs saved against running the trial once to its budget (negative: restarts cost more)."""
        return self.trial.budget - self.trial.epochs_run


def trial_stats(sweep: SweepRecord) -> list[TrialStats]:
    """Per-trial numbers, in sweep order."""
    th = thresholds_of(sweep)
    out = []
    for t in sweep.trials:
        last = t.attempts[-1]
        curve = last.series.get(sweep.metric) or []
        conv = convergence_epoch(curve, thresholds=th, mode=sweep.mode) if curve else None
        rate = decay_rate(last.series.get("train_loss") or [], conv)
        times = [v for v in last.series.get("time_this_iter_s") or [] if math.isfinite(v)]
        helped = None
        if t.restarts:
            first = t.best_of_attempt(0, sweep.metric, sweep.sign)
            final = t.final(sweep.metric)
            if first is not None and final is not None:
                helped = (final - first) * sweep.sign > 0
        out.append(
            TrialStats(
                trial=t,
                value=t.final(sweep.metric),
                convergence_epoch=conv,
                decay_rate=rate,
                epoch_s=float(np.median(times)) if times else None,
                restarts=t.restarts,
                helped=helped,
            )
        )
    return out


# --- factors -----------------------------------------------------------------------------


def _lr_decade(params: dict[str, Any]) -> Any:
    lr = params.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        return None
    return math.floor(math.log10(lr) + 1e-9)


def _regularization(params: dict[str, Any]) -> Any:
    if not any(k in params for k in ("l1", "weight_decay", "dropout")):
        return None
    parts = [
        name
        for name, key in (("L1", "l1"), ("L2", "weight_decay"), ("dropout", "dropout"))
        if isinstance(params.get(key), (int, float)) and params[key] > 0
    ]
    return "+".join(parts) or "none"


def _param(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda params: params.get(name)


#: (table title, the factor's value of a trial's params, how a value is printed)
FACTORS: tuple[tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], str]], ...] = (
    ("optimizer", _param("optimizer"), str),
    ("learning-rate decade", _lr_decade, lambda e: f"[1e{e}, 1e{e + 1})"),
    ("depth (hidden layers)", _param("hidden_layers"), str),
    ("activation", _param("activation"), str),
    ("initialization", _param("init"), str),
    ("regularization", _regularization, str),
    ("batch size", _param("batch_size"), str),
)

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


def decision_label(t: TrialRecord) -> str:
    """``CONVERGED``, ``PRUNED (diverged)``, ``PRUNED (rank rule)``, ``COMPLETED`` ...: the final
    status and, for a pruned trial, the verdict or the inner rank rule behind it."""
    if t.status == "PRUNED" and (t.decision_reason or "").startswith("rank rule"):
        return "PRUNED (rank rule)"
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


def importance(sweep: SweepRecord) -> dict[str, float] | None:
    """Optuna's default importance evaluator on a study of the trials with a final value.

    Each hyperparameter that varied gets a distribution inferred from its values (strings and
    booleans categorical, integers an int range, floats a float range on a log scale when it
    is positive and spans more than a decade). None with fewer than 3 such trials.
    """
    import optuna

    done = [(t.params, t.final(sweep.metric)) for t in sweep.trials]
    done = [(p, v) for p, v in done if v is not None]
    if len(done) < 3:
        return None
    dists: dict[str, Any] = {}
    for name in sorted({k for p, _ in done for k in p}):
        values = [p.get(name) for p, _ in done]
        if any(v is None for v in values) or len({repr(v) for v in values}) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = min(values), max(values)
            if all(isinstance(v, int) for v in values):
                dists[name] = optuna.distributions.IntDistribution(int(lo), int(hi))
            else:
                dists[name] = optuna.distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo > 10)
        else:
            dists[name] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    for params, value in done:
        chosen = {
            k: (str(params[k]) if isinstance(d, optuna.distributions.CategoricalDistribution) else params[k])
            for k, d in dists.items()
        }
        study.add_trial(optuna.trial.create_trial(params=chosen, distributions=dists, value=value))
    return dict(optuna.importance.get_param_importances(study))


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
        out = [self.decisions, *self.factors]
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
    factors, fixed = [], {}
    for title, key, label in FACTORS:
        table = factor_table(stats, title, key, label, sweep.sign)
        if table is not None:
            factors.append(table)
        else:
            values = {key(s.trial.params) for s in stats} - {None}
            if len(values) == 1:
                fixed[title] = label(values.pop())
    imp = None
    if with_importance:
        try:
            imp = importance(sweep)
        except (ValueError, RuntimeError):  # too few distinct values for the evaluator
            imp = None
    return Report(sweep, stats, factors, fixed, decision_table(stats), imp)
