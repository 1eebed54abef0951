"""The sweep's convergence report, written by ``python -m analysis`` in a subprocess.

The driver stays lean (no matplotlib) and the best model's export runs meanwhile. The report
goes beside the Ray results and onto the parent run; from MLflow instead when the results are
not on a local disk. A failure is a warning: the sweep's record matters more than its report.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from orchestrator.summary import SweepSummary
from orchestrator.tracking import is_pending

logger = logging.getLogger(__name__)


def _parent(summary: SweepSummary) -> str | None:
    """The parent run the report is logged to; None without one (or while MLflow is unreachable:
    the report is written, not logged)."""
    parent = summary.parent_run_id
    return None if parent is None or is_pending(parent) else parent


def report_location(summary: SweepSummary) -> str | None:
    """Where :func:`start_report` writes the report, in Markdown, said before it has: for the
    parent run's description, which is written when the parent run ends, before the report is.

    ``<results>/report/report.md`` when the results are local, and the parent run's
    ``report/`` artifacts when it is logged there; None when no report can be written.
    """
    parent, local = _parent(summary), os.path.isdir(summary.results_dir)
    places = [f"`{os.path.join(summary.results_dir, 'report', 'report.md')}`"] if local else []
    if summary.tracking_uri and parent:
        places.append("this run's `report/` artifacts")
    return " and ".join(places) or None


def start_report(summary: SweepSummary) -> subprocess.Popen | None:
    """Start writing the sweep's report; None when there is nothing to read it from.

    From the results directory when it is local (the report goes to ``<results>/report``),
    else from the parent run: call it then once the tracker has delivered everything.
    """
    parent, local = _parent(summary), os.path.isdir(summary.results_dir)
    source = summary.results_dir if local else parent
    if source is None:
        return None
    cmd = [sys.executable, "-m", "analysis", source, "--metric", summary.metric, "--mode", summary.mode]
    cmd += ["--out", os.path.join(summary.results_dir, "report")] if local else []
    if summary.tracking_uri and parent:
        cmd += ["--tracking-uri", summary.tracking_uri, "--log-to-run", parent]
    try:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        logger.warning("could not write the convergence report: %s", exc)
        return None


def finish_report(proc: subprocess.Popen | None, timeout: float = 600) -> str | None:
    """Wait for :func:`start_report`'s subprocess; return report.md's path, or None with a warning."""
    if proc is None:
        return None
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        logger.warning("the convergence report took over %.0f s and was stopped", timeout)
        return None
    lines = err.strip().splitlines()
    if proc.returncode != 0 or not lines:
        logger.warning("could not write the convergence report: %s", lines[-1] if lines else proc.returncode)
        return None
    return os.path.abspath(lines[-1].removeprefix("report written to "))
