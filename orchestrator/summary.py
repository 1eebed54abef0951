"""What a finished sweep found and where its records are: the terminal summary and its metrics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from orchestrator.callbacks import name_of
from orchestrator.contract import hyperparameters
from orchestrator.objectives import front_flags, objectives_of
from orchestrator.outcomes import INTERRUPTED, Outcomes
from orchestrator.policy import coverage_line
from orchestrator.tracking import SweepTracker, ui_hint


@dataclass
class SweepSummary:
    """What a finished sweep found and where its records are.

    ``rules`` and ``rules_off`` are the convergence scheduler's rules that were active and the
    others with why they were off (:meth:`ConvergenceScheduler.rules`); empty for other schedulers.
    """

    name: str
    metric: str
    mode: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: str | None
    statuses: dict[str, int]
    epochs_run: int
    epochs_budget: int
    restarts: int
    wall_s: float
    results_dir: str
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    best_run_id: str | None = None
    ui: str | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    model_uri: str | None = None
    report: str | None = None
    rules: list[str] = field(default_factory=list)
    rules_off: dict[str, str] = field(default_factory=dict)
    restarts_better: int = 0  # restarted attempts that ended better than the attempt they replaced
    paused: int = 0  # trials paused at a rung at least once (freeze-thaw)
    resumed: int = 0  # of those, trials that resumed from their checkpoint
    study: str | None = None  # the Optuna study: ``<name> in <store URL>``
    dashboard: str | None = None  # the optuna-dashboard command that shows it
    objectives: list[tuple[str, str]] = field(default_factory=list)  # several: (metric, mode) each
    front: list[dict[str, Any]] = field(default_factory=list)  # the Pareto front's trial rows

    def front_lines(self) -> list[str]:
        """``Pareto front (val_acc max, params min): 3 of 8 trials`` and one line per front trial
        (its name and objective values); none for one objective."""
        if not self.objectives:
            return []
        said = ", ".join(f"{m} {mode}" for m, mode in self.objectives)
        lines = [f"Pareto front ({said}): {len(self.front)} of {len(self.trials)} trials"]
        for row in self.front:
            values = ", ".join(
                f"{m}={_fmt(v)}" for (m, _), v in zip(self.objectives, row["values"], strict=True)
            )
            lines.append(f"  {row['name']}: {values}")
        return lines

    @property
    def restarts_line(self) -> str:
        """``restarts: 3, 2 ended better than the attempt they replaced``."""
        better = f"{self.restarts_better} ended better than the attempt they replaced"
        return f"restarts: {self.restarts}, {better}"

    @property
    def pauses_line(self) -> str:
        """``paused: 6 trials, 4 resumed from their checkpoint``."""
        return f"paused: {self.paused} trials, {self.resumed} resumed from their checkpoint"

    @property
    def rules_line(self) -> str | None:
        """``rules: a, b; off: c (why)``, or None when the sweep ran no convergence scheduler."""
        return coverage_line(self.rules, self.rules_off) if self.rules or self.rules_off else None

    def render(self) -> str:
        """A short plain-text report for the terminal."""
        ended = "was INTERRUPTED after" if self.interrupted else "finished in"
        lines = [
            f"sweep '{self.name}' {ended} {self.wall_s:.0f}s: "
            f"{sum(self.statuses.values())} trials, {self.epochs_run} epochs trained of "
            f"{self.epochs_budget} budgeted, {self.restarts} restarts"
        ]
        if self.best_value is None:
            lines.append(f"  no trial reported a finite {self.metric}")
        else:
            lines.append(f"  best {self.metric} ({self.mode}): {self.best_value:.4f}  [{self.best_trial}]")
            lines.append(
                "  best configuration: "
                + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.best_params.items()))
            )
        lines.append(
            "  trials by final status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        )
        lines += [f"  {line}" for line in self.front_lines()]
        if self.restarts:
            lines.append(f"  {self.restarts_line}")
        if self.paused:
            lines.append(f"  {self.pauses_line}")
        if self.rules_line:
            lines.append(f"  {self.rules_line}")
        lines.append(f"  Ray results: {self.results_dir}")
        if self.tracking_uri:
            lines.append(
                f"  MLflow: {self.tracking_uri} (parent run {self.parent_run_id}, "
                f"best trial run {self.best_run_id})"
            )
            lines.append(f"  view it: {self.ui}")
        if self.study:
            lines.append(f"  Optuna study: {self.study}")
            lines.append(f"  view it: {self.dashboard}")
        if self.model_uri:
            lines.append(f"  best model: {self.model_uri}")
        if self.report:
            lines.append(f"  convergence report: {self.report}   (python -m analysis {self.results_dir})")
        return "\n".join(lines)

    def markdown(self, report: str | None = None) -> str:
        """The summary in Markdown, the parent run's description: the best value (as
        :meth:`render` prints it) and configuration, trials by final status, epochs run and
        saved, restarts, and where the records are. ``report`` says (in Markdown) where the
        convergence report is or will be; None: no report line."""
        ended = "was **interrupted** after" if self.interrupted else "finished in"
        lines = [f"### Sweep `{self.name}` {ended} {self.wall_s:.0f} s", ""]
        if self.best_value is None:
            lines.append(f"No trial reported a finite `{self.metric}`.")
        else:
            run = f" (run `{self.best_run_id}`)" if self.best_run_id else ""
            best = f"Best `{self.metric}` ({self.mode}): **{self.best_value:.4f}**"
            lines.append(f"{best}, trial `{self.best_trial}`{run}")
            lines += ["", "| best configuration | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(_fmt(v))} |" for k, v in sorted(self.best_params.items())]
        if front := self.front_lines():
            lines += ["", f"{front[0]}:", ""] + [f"- {_cell(line.strip())}" for line in front[1:]]
        lines += ["", "| final status | trials |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(self.statuses.items())]
        saved = self.epochs_budget - self.epochs_run
        lines += [
            "",
            f"- {sum(self.statuses.values())} trials; epochs: {self.epochs_run} run of {self.epochs_budget} "
            f"budgeted ({saved} saved); restarts: {self.restarts}",
        ]
        if self.restarts:
            lines.append(f"- {self.restarts_line}")
        if self.paused:
            lines.append(f"- {self.pauses_line}")
        if self.rules_line:
            lines.append(f"- {self.rules_line}")
        if self.model_uri:
            lines.append(f"- best model: `{self.model_uri}`")
        if report:
            lines.append(f"- convergence report: {report}")
        lines.append(f"- Ray results: `{self.results_dir}`")
        if self.study:
            lines.append(f"- Optuna study: `{self.study}`; view it: `{self.dashboard}`")
        return "\n".join(lines) + "\n"

    def metrics(self) -> dict[str, float]:
        """The summary as the parent run's metrics; ``trials_interrupted`` always (0: none), so a
        resumed sweep's run does not keep the count its interrupted driver logged."""
        metrics: dict[str, float] = {
            "trials": float(sum(self.statuses.values())),
            "epochs_run": float(self.epochs_run),
            "epochs_saved": float(self.epochs_budget - self.epochs_run),
            "restarts": float(self.restarts),
            "restarts_better": float(self.restarts_better),
            "paused_trials": float(self.paused),
            "resumed_trials": float(self.resumed),
            "wall_s": self.wall_s,
        }
        if self.best_value is not None:
            metrics[f"best_{self.metric}"] = self.best_value
        metrics.update({f"trials_{k.lower()}": float(v) for k, v in self.statuses.items()})
        metrics.setdefault(f"trials_{INTERRUPTED.lower()}", 0.0)
        return metrics

    def tags(self) -> dict[str, str]:
        """The summary as the parent run's tags: ``rules`` (the active ones, comma-separated) and
        ``rules_off`` (``name (why)``, comma-separated); none without a convergence scheduler."""
        if not self.rules_line:
            return {}
        off = ", ".join(f"{name} ({why})" for name, why in self.rules_off.items())
        return {"rules": ", ".join(self.rules), "rules_off": off}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """``text`` as one cell of a Markdown table."""
    return text.replace("|", "\\|").replace("\n", " ")


def summarize(
    cfg: Any,
    grid: tune.ResultGrid,
    results_dir: str,
    started: float,
    tracker: SweepTracker | None,
    scheduler: Any,
    outcomes: Outcomes,
) -> SweepSummary:
    """The summary of a fitted sweep; each trial's status is the one :class:`Outcomes` decided.

    With several objectives each trial's run is tagged ``pareto`` (:func:`tag_front`).
    ``scheduler`` is the convergence scheduler (its lineage counts restarts and their epochs;
    its :meth:`rules` say which rules were active) or None; a trial that never ended on its own
    makes the sweep interrupted.
    """
    statuses: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    totals = [0, 0, 0, 0, 0]  # epochs run, restarts, restarts better, trials paused, trials resumed
    for result in grid:
        last = result.metrics or {}
        if result.config is None:  # never started (the sweep was interrupted)
            continue
        tid = last.get("trial_id") or _trial_id(result)
        status = outcomes.of(tid) if tid else INTERRUPTED
        statuses[status] = statuses.get(status, 0) + 1
        counts = _counts(scheduler, tid, last, 1.0 if cfg.mode == "max" else -1.0)
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        decision = scheduler.decision(tid) if scheduler is not None and tid else None
        rows.append(_row(cfg, result.config, last, tid, status, decision))
        rows[-1]["name"] = name_of(tid, result.config) if tid else None
    epochs_run, restarts, better, paused, resumed = totals
    summary = SweepSummary(
        name=cfg.name,
        metric=cfg.metric,
        mode=cfg.mode,
        best_value=None,
        best_params={},
        best_trial=None,
        statuses=statuses,
        epochs_run=epochs_run,
        epochs_budget=len(rows) * cfg.trainable.epochs,
        restarts=restarts,
        restarts_better=better,
        paused=paused,
        resumed=resumed,
        wall_s=time.time() - started,
        results_dir=results_dir,
        trials=rows,
        interrupted=INTERRUPTED in statuses,
    )
    if scheduler is not None:
        summary.rules, summary.rules_off = scheduler.rules()
    _front(summary, cfg, rows)
    if tracker is not None:
        tag_front(summary, tracker)
    _best(summary, grid, tracker)
    return summary


def _counts(scheduler: Any, tid: str | None, last: dict, sign: float) -> list[int]:
    """A trial's epochs run, restarts, restarts that ended better, whether it was paused and
    whether it resumed: from the convergence scheduler's lineage and pauses, else its last epoch."""
    if scheduler is None or not tid:
        return [int(last.get("epoch", 0)), 0, 0, 0, 0]
    lineage, pauses = scheduler.lineage(tid), scheduler.policy.pause_record(tid)
    return [
        sum(r.epochs for r in lineage),
        len(lineage) - 1,
        _better_attempts(lineage, sign),
        int(bool(pauses)),
        int(any(p.resumed for p in pauses)),
    ]


def _row(cfg: Any, config: dict, last: dict, tid: str | None, status: str, decision: Any) -> dict[str, Any]:
    """One trial's row of the summary: its hyperparameters, status, value, epochs and verdict."""
    return {
        **hyperparameters(config),
        "trial_id": tid,
        "status": status,
        "value": last.get(cfg.metric),
        "values": [last.get(o.metric) for o in objectives_of(cfg)] or None,
        "epochs": last.get("epoch"),
        "attempts": int(last.get("attempt", 0)) + 1,
        "verdict": decision.verdict.status if decision is not None and decision.verdict else None,
    }


def _front(summary: SweepSummary, cfg: Any, rows: list[dict[str, Any]]) -> None:
    """With several objectives: each row's final ``values`` and ``pareto`` flag, and the front."""
    objectives = objectives_of(cfg)
    if not objectives:
        return
    summary.objectives = [(o.metric, o.mode) for o in objectives]
    for row, on in zip(rows, front_flags(rows, objectives), strict=True):
        row["pareto"] = on
    summary.front = [row for row in rows if row["pareto"]]


def tag_front(summary: SweepSummary, tracker: SweepTracker) -> None:
    """With several objectives: tag each trial's run ``pareto=true`` (on the front) or ``false``."""
    for row in summary.trials if summary.objectives else []:
        if row.get("trial_id"):
            tracker.tag_trial_run(row["trial_id"], {"pareto": "true" if row["pareto"] else "false"})


def _trial_id(result: Any) -> str | None:
    """The trial id of a result without metrics (it failed before its first report), from its
    directory's name (``trial_0007_<id>``, :func:`orchestrator.callbacks.name_of`)."""
    path = getattr(result, "path", None)
    return path.rstrip("/").rsplit("_", 1)[-1] if path else None


def _best(summary: SweepSummary, grid: tune.ResultGrid, tracker: SweepTracker | None) -> None:
    """Fill in the best trial (Ray's best last result) and where the sweep's records are."""
    if tracker is not None:
        summary.tracking_uri, summary.parent_run_id = tracker.uri, tracker.parent_run_id
        summary.ui = ui_hint(tracker.uri, tracker.experiment_id)
    try:
        best = grid.get_best_result(summary.metric, summary.mode, scope="last")
    except RuntimeError:
        return
    if not best.metrics or summary.metric not in best.metrics:
        return
    summary.best_value = float(best.metrics[summary.metric])
    summary.best_params = hyperparameters(best.config)
    trial_id = best.metrics.get("trial_id")
    summary.best_trial = name_of(trial_id, best.config)
    if tracker is not None and trial_id:
        summary.best_run_id = tracker.run_ids.get(trial_id)


def _better_attempts(lineage: list[Any], sign: float) -> int:
    """How many attempts after the first ended better than the attempt before them (both finite)."""
    finals = [r.final for r in lineage]
    pairs = zip(finals, finals[1:], strict=False)
    return sum(
        a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and sign * (b - a) > 0
        for a, b in pairs
    )
