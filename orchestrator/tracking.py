"""MLflow record of a sweep: a parent run per sweep, a child run per trial. The only mlflow importer.

Everything is logged from the driver through an explicit :class:`MlflowClient` (no global
"active run"), metrics batched with ``log_batch``. No run is left RUNNING: :meth:`close`
ends whatever is still open with the status given.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.errors import ConfigError

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
FLUSH_EVERY = 200  # buffered metric values before a log_batch
_BATCH = 1000  # MLflow's limit of metrics per log_batch
_URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def resolve_tracking_uri(uri: str | None, launch_dir: str) -> str:
    """The tracking URI to use: ``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///<launch_dir>/mlflow.db``.

    A relative SQLite path is made absolute against ``launch_dir`` (trials and servers run
    elsewhere). Raises ConfigError naming ``tracking.uri`` for a URI that does not parse.
    """
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if chosen is None:
        return f"sqlite:///{os.path.join(os.path.abspath(launch_dir), 'mlflow.db')}"
    parsed = urlparse(chosen)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in _URI_SCHEMES:
        raise ConfigError(
            f"tracking.uri: cannot use {chosen!r} (expected a URI such as sqlite:///path/mlflow.db "
            f"or http://127.0.0.1:5000)"
        )
    if scheme in ("http", "https") and not parsed.hostname:
        raise ConfigError(f"tracking.uri: no host in {chosen!r}")
    if scheme == "sqlite":
        path = chosen[len("sqlite:///") :] if chosen.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"tracking.uri: expected sqlite:///<path>, got {chosen!r}")
        if not os.path.isabs(path):
            return f"sqlite:///{os.path.join(os.path.abspath(launch_dir), path)}"
    return chosen


def log_pytorch_model(
    uri: str,
    run_id: str,
    model: Any,
    input_example: Any,
    *,
    registered_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Log a PyTorch model (with an input example, hence a signature) to ``run_id``; return its URI.

    With ``registered_name`` the model is also registered in the Model Registry. Imports
    ``mlflow.pytorch`` (and so torch): call it from a worker or an export subprocess.
    """
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=input_example,
            registered_model_name=registered_name,
            tags=tags or None,
        )
    return info.model_uri


def ui_hint(uri: str, experiment_id: str) -> str:
    """How a user opens the sweep in the MLflow UI (model-training view of the experiment)."""
    view = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{view}"
    return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{view}"


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


@dataclass
class _OpenRun:
    run_id: str
    pending: list[Metric] = field(default_factory=list)


@dataclass
class _TrialRuns:
    """A trial's run (attempt 0 logs there) and the nested runs of its restarts."""

    main: _OpenRun
    attempts: dict[int, _OpenRun] = field(default_factory=dict)

    def current(self, attempt: int) -> _OpenRun:
        return self.attempts.get(attempt, self.main) if attempt > 0 else self.main

    def all(self) -> list[_OpenRun]:
        return [*self.attempts.values(), self.main]


class SweepTracker:
    """Records one sweep in MLflow: ``start_sweep``, per trial ``start_trial`` / ``log_metrics`` /
    ``end_trial``, then ``end_sweep``."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment)
        self.parent: _OpenRun | None = None
        self.trials: dict[str, _TrialRuns] = {}  # trial id -> its open runs
        self.run_ids: dict[str, str] = {}  # trial id -> child run id, open or ended

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            db_dir = os.path.dirname(self.uri[len("sqlite:///") :])
            location = "file://" + os.path.join(db_dir, "mlartifacts")
        return self.client.create_experiment(name, artifact_location=location)

    @property
    def parent_run_id(self) -> str | None:
        return self.parent.run_id if self.parent else None

    def start_sweep(
        self, name: str, params: dict[str, Any], tags: dict[str, str], artifacts: dict[str, str]
    ) -> str:
        """Create the parent run with the sweep's params, tags and text artifacts."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.parent = _OpenRun(run.info.run_id)
        self._log_params(run.info.run_id, params)
        for path, text in artifacts.items():
            self.client.log_text(run.info.run_id, text, path)
        return run.info.run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def start_trial(
        self, trial_id: str, name: str, params: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
        """Create the trial's child run under the parent (once; later calls return it)."""
        if trial_id in self.run_ids:
            return self.run_ids[trial_id]
        all_tags = {PARENT_TAG: self.parent_run_id or "", "trial_id": trial_id, **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.trials[trial_id] = _TrialRuns(_OpenRun(run.info.run_id))
        self.run_ids[trial_id] = run.info.run_id
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def start_attempt(self, trial_id: str, attempt: int, name: str, tags: dict[str, str]) -> str:
        """Create the nested run of a restart (attempt >= 1) under the trial's run (once)."""
        runs = self.trials[trial_id]
        if attempt in runs.attempts:
            return runs.attempts[attempt].run_id
        all_tags = {PARENT_TAG: runs.main.run_id, "trial_id": trial_id, "attempt": str(attempt), **tags}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        runs.attempts[attempt] = _OpenRun(run.info.run_id)
        return run.info.run_id

    def set_tags(self, trial_id: str, tags: dict[str, str], attempt: int = 0) -> None:
        """Tags on the run of a trial's attempt (0: the trial's own run)."""
        run_id = self.trials[trial_id].current(attempt).run_id
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, trial_id: str, metrics: dict[str, float], step: int, attempt: int = 0) -> None:
        """Buffer one step of an attempt's metrics; non-finite values are kept as they are."""
        open_run = self.trials[trial_id].current(attempt)
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            open_run.pending.append(Metric(key, float(value), now, step))
        if len(open_run.pending) >= FLUSH_EVERY:
            self._flush(open_run)

    def _flush(self, open_run: _OpenRun) -> None:
        pending, open_run.pending = open_run.pending, []
        for i in range(0, len(pending), _BATCH):
            self.client.log_batch(open_run.run_id, metrics=pending[i : i + _BATCH])

    def end_trial(
        self,
        trial_id: str,
        status: str,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Flush the trial's metrics, end its restarts' runs, set its final tags, end its run."""
        runs = self.trials.pop(trial_id, None)
        if runs is None:
            return
        for open_run in runs.all():
            self._flush(open_run)
        for open_run in runs.attempts.values():
            self.client.set_terminated(open_run.run_id, status=status)
        self._finish(runs.main.run_id, status, tags, metrics)

    def _finish(
        self, run_id: str, status: str, tags: dict[str, str] | None, metrics: dict[str, float] | None
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[
                Metric(k, float(v), now, 0)
                for k, v in (metrics or {}).items()
                if v is not None and math.isfinite(float(v))
            ],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )
        self.client.set_terminated(run_id, status=status)

    def log_figure(self, trial_id: str, figure: Any, path: str) -> None:
        """A matplotlib figure as an artifact of the trial's run (open or ended)."""
        self.client.log_figure(self.run_ids[trial_id], figure, path)

    def log_artifact_text(self, text: str, path: str) -> None:
        """A text artifact on the parent run."""
        if self.parent is not None:
            self.client.log_text(self.parent.run_id, text, path)

    def end_sweep(
        self, status: str, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None
    ) -> None:
        """End open trial runs (KILLED unless already ended), then the parent run."""
        self.close("KILLED")
        if self.parent is not None:
            self._finish(self.parent.run_id, status, tags, metrics)
            self.parent = None

    def close(self, status: str) -> None:
        """End every trial run still open with ``status``; never leaves a run RUNNING."""
        for trial_id in list(self.trials):
            try:
                self.end_trial(trial_id, status, {"final_status": "INTERRUPTED"})
            except Exception:  # noqa: BLE001 - ending the others matters more than one failure
                logger.exception("could not end the MLflow run of trial %s", trial_id)
