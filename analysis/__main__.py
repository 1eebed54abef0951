"""``python -m analysis SWEEP``: the convergence report of a finished sweep.

SWEEP is a sweep's Ray results directory (the "Ray results:" path it printed), an MLflow
parent run id, or an MLflow experiment name (its latest sweep). Prints the report's tables
and writes ``report.md``, ``report.json`` and the plots (``anytime.png``, ``curves.png``,
``timeline.png``) to ``--out`` (default: ``<results dir>/report`` for a directory,
``reports/<sweep>-<run id>`` otherwise). ``--log-to-run RUN_ID`` also logs them under
``report/`` on that MLflow run with the headline numbers as metrics, and each trial's
``learning_curve.png`` on its child run (what every sweep does with its parent run when it
ends).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from analysis.load import SweepNotFound, default_tracking_uri, load
from analysis.records import SweepRecord
from analysis.report import Report, TrialStats, build, decision_label

EXIT_BAD_INPUT = 2


def write(report: Report, out: str, *, plots: bool = True) -> list[str]:
    """Write the report's Markdown, JSON and plots into ``out``; return the files written."""
    os.makedirs(out, exist_ok=True)
    written = []
    images: list[str] = []
    if plots and report.sweep.trials:
        from analysis.plots import close, plot_anytime, plot_curves, plot_timeline

        figures = {
            "anytime.png": lambda: plot_anytime(report.sweep),
            "curves.png": lambda: plot_curves(
                report.sweep,
                [s.convergence_epoch if s.converged else None for s in report.stats],
                [decision_label(s.trial) for s in report.stats],
            ),
            "timeline.png": lambda: plot_timeline(report.sweep),
        }
        if len(report.sweep.objectives) >= 2:  # several objectives: the front over the first two
            from analysis.front import plot_front

            figures["pareto.png"] = lambda: plot_front(report.sweep)
        for name, make in figures.items():
            fig = make()
            try:
                fig.savefig(os.path.join(out, name), dpi=110)
            finally:
                close(fig)
            images.append(name)
    for name, text in (
        ("report.md", report.markdown(images)),
        ("report.json", json.dumps(report.as_dict(), indent=1, default=str)),
    ):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
        written.append(name)
    return [os.path.join(out, n) for n in written + images]


def log_to_run(uri: str, run_id: str, out: str, report: Report, *, trial_plots: int = 500) -> None:
    """Log the report directory under ``report/`` on ``run_id`` and its headline numbers as metrics;
    log each trial's ``learning_curve.png`` (every attempt, the decision marked) to its child run
    (the first ``trial_plots`` trials)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.log_artifacts(run_id, out, "report")
    summary = report.summary()
    keys = ("converged_trials", "restarted_trials", "restarts_helped", "epochs_saved_frac")
    metrics = [Metric(f"report_{k}", float(summary[k]), 0, 0) for k in keys if summary[k] is not None]
    client.log_batch(run_id, metrics=metrics)
    if trial_plots <= 0:
        return
    from analysis.plots import close, plot_trial

    experiment = client.get_run(run_id).info.experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=50000)
    run_of = {r.data.tags["trial_id"]: r.info.run_id for r in children if "trial_id" in r.data.tags}
    for stats in report.stats[:trial_plots]:
        trial = stats.trial
        if trial.trial_id not in run_of:
            continue
        fig = plot_trial(
            trial.name, trial.attempts, metric=report.sweep.metric, decision=decision_mark(stats)
        )
        try:
            client.log_figure(run_of[trial.trial_id], fig, "learning_curve.png", save_kwargs={"dpi": 80})
        finally:
            close(fig)


def decision_mark(stats: TrialStats) -> dict[str, Any]:
    """What a trial's plot marks: the decision, its verdict and reason, and the epoch it is about
    (the convergence epoch when the trial converged, else the last epoch of a scheduler's stop)."""
    trial = stats.trial
    action = {"CONVERGED": "stop", "PRUNED": "prune"}.get(trial.status, trial.status.lower())
    step = stats.convergence_epoch if stats.converged else None
    if step is None and trial.status in ("CONVERGED", "PRUNED") and trial.attempts:
        step = trial.attempts[-1].epochs[-1]
    reason = trial.decision_reason or trial.reason or ""
    return {"action": action, "verdict": trial.verdict or "", "reason": reason, "step": step}


def _default_out(sweep: str, record: SweepRecord) -> str:
    if os.path.isdir(sweep):
        return os.path.join(os.path.abspath(sweep), "report")
    tail = record.source.rsplit(" ", 1)[-1][:8]
    return os.path.join("reports", f"{record.name}-{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "sweep", help="Ray results directory, MLflow parent run id, or MLflow experiment name"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--out", help="directory for report.md, report.json and the plots")
    parser.add_argument("--metric", help="metric to report (default: the sweep's)")
    parser.add_argument("--mode", choices=("max", "min"), help="whether a higher metric is better")
    parser.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="what to print"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG files")
    parser.add_argument("--no-importance", action="store_true", help="skip Optuna's importance evaluator")
    parser.add_argument("--log-to-run", metavar="RUN_ID", help="also log the report to this MLflow run")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    try:
        record = load(args.sweep, uri=uri, metric=args.metric, mode=args.mode)
    except SweepNotFound as exc:
        print(f"error: sweep: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = build(record, with_importance=not args.no_importance)
    out = args.out or _default_out(args.sweep, record)
    files = write(report, out, plots=not args.no_plots)
    printed: dict[str, Any] = {
        "text": report.text,
        "markdown": lambda: report.markdown([os.path.basename(f) for f in files if f.endswith(".png")]),
        "json": lambda: json.dumps(report.as_dict(), indent=1, default=str),
    }
    print(printed[args.format]())
    if args.log_to_run:
        log_to_run(uri, args.log_to_run, out, report)
    print(f"report written to {os.path.join(out, 'report.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
