"""Export the sweep's best model from a subprocess that warmed up while the last trials trained.

The export (``python -m orchestrator.export``) imports torch and MLflow's torch flavour, loads
the dataset and opens the store before it can log anything: ~8 s on 2 cores that used to
follow the sweep. :class:`ModelExporter` starts it with ``--serve`` when
:class:`WarmExporter` sees a slot go idle for good (no trial left to start), and hands it the
spec when the sweep ends. Without a warm-up (a sweep interrupted, a Tuner running remotely
over ``ray://``) the export starts cold at the end, as before. The driver never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any

from ray.tune import Callback

from orchestrator.tracking import is_pending

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export subprocess failed; the message is its last line of error output."""


class ModelExporter:
    """One ``python -m orchestrator.export --serve`` process: :meth:`start` early, :meth:`export` once.

    ``warm`` is what the warm-up needs (the sweep's ``run`` settings and its ``tracking_uri``).
    """

    def __init__(self, warm: dict[str, Any]) -> None:
        self.warm = warm
        self._proc: subprocess.Popen[str] | None = None
        self._files: list[str] = []

    @property
    def started(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        """Start the warm-up (once; later calls do nothing)."""
        if self._proc is not None:
            return
        path = self._write(self.warm, "warm")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.export", "--serve", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def export(self, spec: dict[str, Any], timeout_s: float = 600.0) -> str:
        """Log the model ``spec`` describes (see :mod:`orchestrator.export`); return its URI.

        Raises:
            ExportError: the subprocess exited non-zero or printed no URI.
        """
        self.start()
        assert self._proc is not None
        try:
            out, err = self._proc.communicate(self._write(spec, "spec") + "\n", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise ExportError(f"no model logged within {timeout_s:.0f} s") from None
        finally:
            self._remove_files()
        lines = out.strip().splitlines()
        if self._proc.returncode != 0 or not lines:
            errors = err.strip().splitlines()
            raise ExportError(errors[-1] if errors else f"exit status {self._proc.returncode}")
        return lines[-1]

    def close(self) -> None:
        """Stop a warm-up that was never used (it holds nothing to lose: terminated, not awaited)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        self._remove_files()

    def _write(self, data: dict[str, Any], kind: str) -> str:
        with tempfile.NamedTemporaryFile("w", prefix=f"export-{kind}-", suffix=".json", delete=False) as f:
            json.dump(data, f)
        self._files.append(f.name)
        return f.name

    def _remove_files(self) -> None:
        for path in self._files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._files.clear()


class WarmExporter(Callback):
    """Start ``exporter``'s warm-up when a trial ends and no trial is left to start.

    From then on the slot that trial freed stays idle, so the warm-up (~5 s of CPU) overlaps
    the last trials on a CPU no trial needs. Started earlier, it would take CPU from the trials
    (measured on 2 cores: the fit grew by more than the export shrank). Counted from Tune's
    trials, so a resumed sweep counts the trials its first driver finished.
    """

    def __init__(self, exporter: ModelExporter, trials: int) -> None:
        self.exporter = exporter
        self.trials = trials

    def _slot_freed(self, trials: list) -> None:
        if self.exporter.started or len(trials) < self.trials:
            return
        if all(t.status != "PENDING" for t in trials):
            logger.debug("no trial left to start: warming up the model export")
            self.exporter.start()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._slot_freed(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._slot_freed(trials)


def _trial_run(tracker: Any, trial_id: str | None) -> str | None:
    """The MLflow run of ``trial_id`` when the store has it, else None (the sweep's run is used)."""
    if trial_id is None or trial_id not in tracker.run_ids:
        return None
    run_id = tracker.run_ids[trial_id]
    return None if is_pending(run_id) else run_id


def export_best(cfg: Any, grid: Any, tracker: Any, summary: Any, exporter: ModelExporter) -> None:
    """Log the best trial's model on the sweep's run, in a subprocess (the driver stays torch-free),
    warmed up while the last trials trained when :class:`WarmExporter` could start it.

    A failure is a warning: the sweep's record matters more than the exported model.
    """
    try:
        best = grid.get_best_result(cfg.metric, cfg.mode, scope="last")
    except RuntimeError:
        return
    if best.checkpoint is None or not os.path.isdir(best.checkpoint.path) or tracker.parent_run_id is None:
        logger.warning("no local checkpoint of the best trial to log as a model")
        return
    if is_pending(tracker.parent_run_id):
        logger.warning("MLflow at %s is unreachable: the best model is not logged", tracker.uri)
        return
    spec = {
        "checkpoint": best.checkpoint.path,
        "config": best.config,
        "tracking_uri": tracker.uri,
        "run_id": tracker.parent_run_id,
        "register_as": cfg.tracking.register_model,
        "trial": summary.best_trial or "",
        "trial_run_id": _trial_run(tracker, best.metrics.get("trial_id")),
    }
    try:
        summary.model_uri = exporter.export(spec)
    except ExportError as exc:
        logger.warning("could not log the best model: %s", exc)
