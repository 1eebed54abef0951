"""Read a sweep into a :class:`SweepRecord` from its Ray results directory or its MLflow runs.

A sweep is named by a Ray experiment directory (the "Ray results:" path a sweep prints), an
MLflow parent run id, or an MLflow experiment name (its latest sweep). Both sources give the
same records: a trial's attempts come from the ``attempt`` key of its results (Ray) or from
its nested attempt runs (MLflow); an epoch reported again after a crash keeps its first report
(the MLflow record never logs a step twice).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Iterable
from typing import Any

from analysis.curves import AttemptCurve
from analysis.records import SweepRecord, TrialRecord, final_status, has_epoch, hyperparameters, parse_value

#: Per-epoch series a report reads, besides the sweep's metric.
SERIES = ("val_loss", "train_loss", "time_this_iter_s")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_STAMP = re.compile(r"_\d{8}-\d{6}$")  # the launch time a sweep appends to its name
_RAY_LIVE = ("PENDING", "RUNNING", "PAUSED")


class SweepNotFound(Exception):
    """The named sweep does not exist or is not a sweep; the message says what was looked at."""


def _add(curve: AttemptCurve, epoch: int, values: dict[str, float]) -> None:
    """Append an epoch; an epoch reported again (a trial resumed from an older checkpoint after
    a crash replays it) keeps its first report, as the MLflow record does."""
    if curve.epochs and epoch <= curve.epochs[-1]:
        return
    curve.add(epoch, values)


# --- Ray results directory ---------------------------------------------------------------


def read_results(path: str) -> list[dict[str, Any]]:
    """The results in a trial's ``result.json`` (one JSON object a line; a line cut short by a
    killed process is skipped); a missing file has none."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def ray_snapshot(sweep_dir: str) -> list[dict[str, Any]] | None:
    """The trials of Ray's newest experiment snapshot in the (local) ``sweep_dir``, as Ray wrote
    them (``trial_id``, ``status``, ``relative_logdir``, ...); None when there is no snapshot."""
    snapshots = sorted(glob.glob(os.path.join(sweep_dir, "experiment_state-*.json")))
    if not snapshots:
        return None
    with open(snapshots[-1], encoding="utf-8") as f:
        state = json.load(f)
    return [json.loads(entry[0]) for entry in state.get("trial_data", [])]


def _ray_statuses(sweep_dir: str) -> dict[str, str] | None:
    """Trial directory name -> Ray status, from the newest experiment snapshot (None: none)."""
    trials = ray_snapshot(sweep_dir)
    if trials is None:
        return None
    return {os.path.basename(t.get("relative_logdir", "")): t.get("status", "") for t in trials}


def _sweep_settings(sweep_dir: str) -> dict[str, Any]:
    """The sweep's saved settings (``orchestrator.json``) when the sweep wrote them."""
    path = os.path.join(sweep_dir, "orchestrator.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    return saved.get("config", saved) if isinstance(saved, dict) else {}


def load_ray_dir(sweep_dir: str, *, metric: str | None = None, mode: str | None = None) -> SweepRecord:
    """Read a Ray experiment directory written by a sweep."""
    sweep_dir = os.path.abspath(sweep_dir)
    trial_dirs = sorted(
        d for d in glob.glob(os.path.join(sweep_dir, "*")) if os.path.isfile(f"{d}/params.json")
    )
    if not trial_dirs:
        raise SweepNotFound(f"{sweep_dir}: not a sweep's Ray results directory (no trial directories)")
    settings = _sweep_settings(sweep_dir)
    metric = metric or settings.get("metric") or "val_acc"
    mode = mode or settings.get("mode") or "max"
    statuses = _ray_statuses(sweep_dir)
    objectives = [(str(o["metric"]), str(o["mode"])) for o in settings.get("objectives") or ()]
    keys = (metric, *(m for m, _ in objectives))
    trials = []
    for trial_dir in trial_dirs:
        if statuses is not None and os.path.basename(trial_dir) not in statuses:
            continue  # not in Ray's snapshot: started after it by a driver that died (LOST)
        results_path = os.path.join(trial_dir, "result.json")
        rows = [r for r in read_results(results_path) if has_epoch(r)]
        if not rows:
            continue  # never trained an epoch (or never reported one: a broken metric contract)
        with open(os.path.join(trial_dir, "params.json")) as f:
            config = json.load(f)
        trials.append(_ray_trial(os.path.basename(trial_dir), config, rows, keys, statuses))
    name = _STAMP.sub("", os.path.basename(sweep_dir))
    thresholds = (settings.get("scheduler") or {}).get("thresholds") or {}
    record = SweepRecord(name, metric, mode, trials, source=sweep_dir, thresholds=dict(thresholds))
    record.objectives = objectives
    return record


def _ray_trial(
    name: str,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    keys: tuple[str, ...],
    statuses: dict[str, str],
) -> TrialRecord:
    curves: dict[int, AttemptCurve] = {}
    last_of: dict[int, dict[str, Any]] = {}
    for row in rows:
        attempt = int(row.get("attempt", 0))
        if curves and attempt < max(curves):
            continue  # a late result of an attempt that was restarted
        curve = curves.setdefault(attempt, AttemptCurve(attempt, row.get("seed")))
        values = {k: row[k] for k in (*keys, *SERIES) if isinstance(row.get(k), (int, float))}
        values["time"] = float(row.get("timestamp", math.nan))
        _add(curve, int(row["epoch"]), values)
        last_of[attempt] = row
    last = last_of[max(last_of)]
    budget = int(config.get("epochs", last.get("epoch", 0)))
    ray_status = (statuses or {}).get(name, "TERMINATED")
    if ray_status in _RAY_LIVE:
        status = "INTERRUPTED"
    else:
        status = final_status(last, budget, errored=ray_status == "ERROR", action=last.get("action"))
    restart_reasons = [
        str(last_of.get(a - 1, {}).get("decision_reason", "")) for a in sorted(curves) if a > 0
    ]
    return TrialRecord(
        trial_id=str(last.get("trial_id", name)),
        name=name,
        params=hyperparameters(config),
        status=status,
        budget=budget,
        attempts=[curves[a] for a in sorted(curves)],
        verdict=last.get("verdict"),
        reason=last.get("verdict_reason"),
        decision_reason=last.get("decision_reason"),
        restart_reasons=restart_reasons,
    )


# --- MLflow ------------------------------------------------------------------------------


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the store a sweep launched here uses: ``sqlite:///$PWD/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}"


def _search_all(client: Any, experiment_id: str, filter_string: str) -> Iterable[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _parent_run(client: Any, sweep: str) -> Any:
    if _RUN_ID.fullmatch(sweep):
        try:
            return client.get_run(sweep)
        except Exception as exc:  # noqa: BLE001 - MLflow raises its own exception types
            raise SweepNotFound(f"{sweep}: no such MLflow run ({str(exc).splitlines()[0]})") from None
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        raise SweepNotFound(f"{sweep}: neither a directory, an MLflow run id nor an MLflow experiment name")
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.sweep LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        raise SweepNotFound(f"{sweep}: the MLflow experiment holds no sweep")
    return parents[0]


def sweep_ids(name: str, uri: str | None = None) -> list[str]:
    """The parent run ids of the finished sweeps in MLflow experiment ``name`` (a run id: itself).

    Raises:
        SweepNotFound: no such experiment.
    """
    if _RUN_ID.fullmatch(name):
        return [name]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or default_tracking_uri())
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise SweepNotFound(f"{name}: neither an MLflow run id nor an MLflow experiment name")
    runs = _search_all(
        client, experiment.experiment_id, "tags.sweep LIKE '%' AND attributes.status = 'FINISHED'"
    )
    return [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]


def _history(client: Any, run_id: str, keys: Iterable[str]) -> AttemptCurve:
    """An attempt's curves from a run's metric histories (``time`` from the metric's timestamps)."""
    by_step: dict[int, dict[str, float]] = {}
    first = True
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            by_step.setdefault(int(m.step), {})[key] = float(m.value)
            if first:
                by_step[int(m.step)]["time"] = m.timestamp / 1000.0
        first = False
    curve = AttemptCurve(0)
    for step in sorted(by_step):
        curve.add(step, by_step[step])
    return curve


def load_mlflow(sweep: str, uri: str | None = None, *, metric: str | None = None) -> SweepRecord:
    """Read a sweep's parent run (by id, or the latest in an experiment) and its trial and attempt runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or default_tracking_uri())
    parent = _parent_run(client, sweep)
    if "sweep" not in parent.data.tags:
        raise SweepNotFound(f"{sweep}: MLflow run {parent.info.run_id} is not a sweep's parent run")
    pid, exp = parent.info.run_id, parent.info.experiment_id
    pparams = {k: parse_value(v) for k, v in parent.data.params.items()}
    metric = metric or str(pparams.get("metric", "val_acc"))
    mode = str(pparams.get("mode", "max"))
    runs = list(_search_all(client, exp, f"tags.`mlflow.parentRunId` = '{pid}'"))
    trial_runs = {r.info.run_id: r for r in runs if "trial_id" in r.data.tags}
    nested: dict[str, list[Any]] = {}
    since = parent.info.start_time
    for r in _search_all(client, exp, f"tags.attempt LIKE '%' AND attributes.start_time >= {since}"):
        owner = r.data.tags.get("mlflow.parentRunId")
        if owner in trial_runs:
            nested.setdefault(owner, []).append(r)
    keys = (metric, *SERIES)
    trials = []
    for run in sorted(trial_runs.values(), key=lambda r: r.info.run_name or ""):
        tags = run.data.tags
        if tags.get("final_status") == "LOST":  # not part of the sweep it was resumed as
            continue
        attempts = [_history(client, run.info.run_id, keys)]
        attempts[0].seed = _seed(tags.get("lineage"), 0)
        reasons = []
        for sub in sorted(nested.get(run.info.run_id, []), key=lambda r: int(r.data.tags["attempt"])):
            curve = _history(client, sub.info.run_id, keys)
            curve.attempt = int(sub.data.tags["attempt"])
            curve.seed = parse_value(sub.data.tags.get("seed", "None"))
            attempts.append(curve)
            reasons.append(sub.data.tags.get("restart_reason", ""))
        params = {k: parse_value(v) for k, v in run.data.params.items()}
        trials.append(
            TrialRecord(
                trial_id=tags["trial_id"],
                name=run.info.run_name or tags["trial_id"],
                params=params,
                status=tags.get("final_status", "INTERRUPTED"),
                budget=int(params.get("epochs", pparams.get("epochs", 0))),
                attempts=[a for a in attempts if a.epochs],
                verdict=tags.get("verdict"),
                reason=tags.get("verdict_reason"),
                decision_reason=tags.get("decision_reason"),
                restart_reasons=reasons,
            )
        )
    thresholds = {k.split(".", 2)[2]: v for k, v in pparams.items() if k.startswith("scheduler.thresholds.")}
    name = parent.info.run_name or parent.data.tags.get("sweep", pid)
    return SweepRecord(name, metric, mode, [t for t in trials if t.attempts], f"mlflow run {pid}", thresholds)


def _seed(lineage: str | None, attempt: int) -> int | None:
    try:
        return int(json.loads(lineage or "[]")[attempt]["seed"])
    except (ValueError, LookupError, TypeError):
        return None


def load(
    sweep: str, *, uri: str | None = None, metric: str | None = None, mode: str | None = None
) -> SweepRecord:
    """A Ray results directory, else an MLflow parent run id or experiment name."""
    if os.path.isdir(sweep):
        return load_ray_dir(sweep, metric=metric, mode=mode)
    record = load_mlflow(sweep, uri, metric=metric)
    if mode:
        record.mode = mode
    return record
