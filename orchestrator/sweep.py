"""Run one sweep: check inputs, start (or join) Ray, run the Tuner, record to MLflow, summarise.

Everything that can be known before a trial starts is checked first (config, storage path,
data files, tracking URI, resources against the cluster); a problem is a ConfigError and
nothing is started or recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.callbacks import (
    FinishedTrials,
    MlflowTrialCallback,
    VerdictCallback,
    final_status,
    name_of,
    trial_name,
    trial_params,
)
from orchestrator.cluster import alive_nodes, check_resources, cluster_address, join_failure, reachable
from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError
from orchestrator.exporting import ExportError, ModelExporter, WarmExporter
from orchestrator.resume import SweepRecord, SweepState, backfill, config_data, read_record, write_record
from orchestrator.scheduler import ConvergenceScheduler
from orchestrator.scheduling import build_scheduler
from orchestrator.search import build_searcher, num_trials
from orchestrator.tracking import GRACE_ENV, StoreOpening, SweepTracker, resolve_tracking_uri, ui_hint
from trainables.data import DataError, check_data_root
from trainables.entry import train

logger = logging.getLogger(__name__)


@dataclass
class SweepSummary:
    """What a finished sweep found and where its records are."""

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
        lines.append(f"  Ray results: {self.results_dir}")
        if self.tracking_uri:
            lines.append(
                f"  MLflow: {self.tracking_uri} (parent run {self.parent_run_id}, "
                f"best trial run {self.best_run_id})"
            )
            lines.append(f"  view it: {self.ui}")
        if self.model_uri:
            lines.append(f"  best model: {self.model_uri}")
        if self.report:
            lines.append(f"  convergence report: {self.report}   (python -m analysis {self.results_dir})")
        return "\n".join(lines)


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}``: settings as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _git_commit(directory: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def resolve_storage(path: str, launch_dir: str) -> str:
    """The absolute storage directory (or URI); refuses a local path that cannot be written."""
    if "://" in path:
        return path
    full = os.path.abspath(os.path.join(launch_dir, os.path.expanduser(path)))
    probe = full
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:  # a real write beats os.access, which says yes to root everywhere
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=probe))
    except OSError as exc:
        raise ConfigError(f"storage.path: cannot write to {full!r} ({exc.strerror} in {probe!r})") from None
    return full


def _run_config(cfg: SweepConfig, launch_dir: str) -> dict[str, Any]:
    """The part of every trial's config that is the same across the sweep (paths absolute)."""
    t = cfg.trainable
    return {
        "model": t.model,
        "dataset": t.dataset,
        "checkpoint_every": t.checkpoint_every,
        "sweep_seed": cfg.seed,
        "data": {
            "root": os.path.abspath(os.path.join(launch_dir, t.data.root)) if t.data.root else None,
            "val_fraction": t.data.val_fraction,
            "split_seed": t.data.split_seed,
            "max_samples": t.data.max_samples,
        },
    }


def _start_ray(cfg: SweepConfig) -> bool:
    """Start the embedded Ray (cluster=local) or join the cluster (cluster=ray) unless Ray is
    already initialised; True when this call connected.

    An unreachable cluster is a ConfigError naming ``cluster.address``, raised within
    ``cluster.connect_timeout_s`` and before anything is created. A Ray Client session the head
    failed to start (it can, when busy) is asked for once more.
    """
    if ray.is_initialized():
        return False
    if cfg.cluster.mode == "ray":
        address = cluster_address(cfg)
        from_env = cfg.cluster.address is None and "RAY_ADDRESS" in os.environ
        where = "cluster.address (from $RAY_ADDRESS)" if from_env else "cluster.address"
        address = reachable(address, cfg.cluster.connect_timeout_s, where)
        retries = 1  # Ray Client: a busy head can fail to start this client's session once
        while True:
            try:
                with warnings.catch_warnings():  # Ray Client warns before it raises: the error says it once
                    warnings.filterwarnings("ignore", "Ray Client connection timed out")
                    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
                return True
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here; all mean "cannot join"
                reason = join_failure(exc, address)
                if not (isinstance(exc, ConnectionAbortedError) and retries):
                    raise ConfigError(
                        f"{where}: cannot join the Ray cluster at {address!r} ({reason})"
                    ) from None
                retries -= 1
                logger.warning(
                    "%s: Ray Client could not start a session (%s); trying once more", address, reason
                )
                ray.shutdown()
    ray.init(
        address="local",  # a new embedded Ray, never a `ray start` cluster found on this machine
        num_cpus=cfg.cluster.num_cpus,
        num_gpus=cfg.cluster.num_gpus,
        include_dashboard=False,
        log_to_driver=True,
        logging_level=logging.WARNING,
    )
    return True


def run(
    cfg: SweepConfig,
    *,
    resolved_yaml: str = "",
    overrides: tuple[str, ...] = (),
    callbacks: Sequence[tune.Callback] = (),
) -> SweepSummary:
    """Run the sweep described by ``cfg`` and return its summary.

    The resolved config goes into ``<sweep dir>/orchestrator.json`` before any trial starts, so
    :func:`resume` can finish the sweep if this driver dies. ``callbacks`` are Ray Tune
    callbacks added after the sweep's own.
    """
    return _run(cfg, resolved_yaml, overrides, callbacks, None)


def resume(path: str, *, callbacks: Sequence[tune.Callback] = ()) -> SweepSummary:
    """Finish the sweep in ``path`` (the "Ray results:" directory) whose driver was killed.

    The config comes from the sweep's own ``orchestrator.json``. Finished trials stay finished;
    unfinished ones continue from their last checkpoint; the searcher, the convergence
    scheduler (state, restart counts, decisions) and the MLflow runs (the same parent and
    trial runs, reopened) continue from Ray's last experiment snapshot, and no step is logged
    twice. A bad ``path`` is a ConfigError naming ``resume``.
    """
    record, cfg = read_record(path)
    return _run(cfg, record.resolved_yaml, tuple(record.overrides), callbacks, record)


def _run(
    cfg: SweepConfig,
    resolved_yaml: str,
    overrides: tuple[str, ...],
    extra: Sequence[tune.Callback],
    record: SweepRecord | None,
) -> SweepSummary:
    started = time.time()
    launch_dir = record.launch_dir if record else os.getcwd()
    storage = record.storage if record else resolve_storage(cfg.storage.path, launch_dir)
    try:
        check_data_root(cfg.trainable.dataset, cfg.trainable.data.root)
    except DataError as exc:
        raise ConfigError(f"trainable.{exc}") from None
    if record is not None:
        uri = record.tracking_uri
    else:
        uri = resolve_tracking_uri(cfg.tracking.uri, launch_dir) if cfg.tracking.enabled else None
    if cfg.cluster.mode == "local":  # known before starting anything
        check_resources(cfg, {"CPU": float(cfg.cluster.num_cpus or os.cpu_count() or 1)})
    trials = num_trials(cfg)
    searcher, scheduler = build_searcher(cfg), build_scheduler(cfg, trials)
    env = _TuneEnv()
    env.default("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if cfg.scheduler.name == "convergence":  # Ray's classic table, which can show the verdicts
        env.default("RAY_AIR_NEW_OUTPUT", "0")
    early = None  # a new local sweep's MLflow store is made (~2 s for SQLite) while Ray starts
    if uri and record is None and cfg.cluster.mode == "local" and not ray.is_initialized():
        early = StoreOpening(uri, cfg.tracking.experiment or cfg.name)
    own_ray = False
    exporter: ModelExporter | None = None
    tracker: SweepTracker | None = None
    try:
        own_ray = _start_ray(cfg)
        have = ray.cluster_resources()
        slots = check_resources(
            cfg, alive_nodes() or [{"CPU": have.get("CPU", 0.0), "GPU": have.get("GPU", 0.0)}]
        )
        trainable = tune.with_resources(
            train, {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
        )
        param_space = {
            **cfg.space.fixed,
            "epochs": cfg.trainable.epochs,
            "attempt": 0,
            "run": _run_config(cfg, launch_dir),
        }
        restored = _restore(record.directory, trainable, param_space) if record else None
        if early is not None:
            tracker = early.tracker()
        else:
            tracker = SweepTracker(uri, cfg.tracking.experiment or cfg.name) if uri else None
        concurrent = min(cfg.max_concurrent_trials or slots, trials)
        env.default("TUNE_MAX_PENDING_TRIALS_PG", str(concurrent))
        experiment = record.experiment if record else f"{cfg.name}_{time.strftime('%Y%m%d-%H%M%S')}"
        convergence = _convergence(scheduler)
        finished = FinishedTrials()
        callbacks: list[tune.Callback] = [SweepState(convergence, finished)]  # first: its index is its key
        callbacks += [VerdictCallback(convergence)] if convergence else []
        callbacks += [finished, JsonLoggerCallback(), CSVLoggerCallback()]
        recorder = None
        if tracker is not None and record is not None and record.parent_run_id:
            logged = tracker.resume(record.parent_run_id)
            recorder = MlflowTrialCallback(tracker, cfg.trainable.epochs, convergence)
            recorder.mark_logged(logged)  # steps already in MLflow are not logged again
            backfill(record.directory, tracker, recorder)  # results a killed driver never delivered
            callbacks.append(recorder)
        elif tracker is not None:
            tags = {"sweep": cfg.name, "ray_experiment": experiment, "storage": storage}
            commit = _git_commit(launch_dir)
            if commit:
                tags["git_commit"] = commit
            params = {
                "num_samples": trials,
                "search": cfg.search.algorithm,
                "seed": cfg.seed,
                "scheduler": cfg.scheduler.name,
                "metric": cfg.metric,
                "mode": cfg.mode,
                "model": cfg.trainable.model,
                "dataset": cfg.trainable.dataset,
                "epochs": cfg.trainable.epochs,
                "cpus_per_trial": cfg.resources.cpus_per_trial,
                "gpus_per_trial": cfg.resources.gpus_per_trial,
            }
            params.update({f"space.{k}": v for k, v in cfg.trainable.hparams.items()})
            params.update(_flat("search", dataclasses.asdict(cfg.search)))
            params.update(_flat("scheduler", dataclasses.asdict(cfg.scheduler)))
            tracker.start_sweep(
                cfg.name,
                params,
                tags,
                {"config.yaml": resolved_yaml, "overrides.txt": "\n".join(overrides) + "\n"},
            )
            recorder = MlflowTrialCallback(tracker, cfg.trainable.epochs, convergence)
            callbacks.append(recorder)
        on_cluster = ray.util.client.ray.is_connected()  # ray://: this process is a Ray Client
        if tracker is not None and cfg.tracking.log_model:
            exporter = ModelExporter({"run": param_space["run"], "tracking_uri": tracker.uri})
            callbacks += [] if on_cluster else [WarmExporter(exporter, trials)]
        callbacks += list(extra)
        if record is None:
            parent = tracker.parent_run_id if tracker is not None else None
            record = SweepRecord(
                experiment, storage, launch_dir, config_data(cfg), list(overrides), resolved_yaml, uri, parent
            )
            write_record(record)
        tune_config = tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=concurrent,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        )
        run_config = tune.RunConfig(
            name=experiment,
            storage_path=storage,
            verbose=cfg.verbose,
            progress_reporter=_reporter(cfg) if convergence and cfg.verbose else None,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
            failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
        )
        tuner = None
        if not on_cluster:
            tuner = restored or tune.Tuner(
                trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
            )
            _go_live(tuner, searcher, scheduler, callbacks)
        try:
            if tuner is not None:
                grid = tuner.fit()
            else:
                wanted = [finished, *([recorder] if recorder is not None else [])]
                grid, back, scheduler = _fit_on_cluster(
                    trainable, param_space, tune_config, run_config, callbacks, wanted
                )
                convergence, finished = _convergence(scheduler), back[0]
                if tracker is not None and recorder is not None:
                    tracker.adopt(back[1].tracker)
            results_dir = os.path.join(storage, experiment)
            summary = _summarize(cfg, grid, results_dir, started, tracker, convergence, finished)
        except BaseException as exc:
            if tracker is not None:
                status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
                tracker.end_sweep(status, {"final_status": "INTERRUPTED" if status == "KILLED" else "ERROR"})
            raise
        reporting = cfg.report and bool(summary.trials) and not summary.interrupted
        report = start_report(summary) if reporting and os.path.isdir(summary.results_dir) else None
        if exporter is not None and not summary.interrupted:
            _export_best(cfg, grid, tracker, summary, exporter)
        if tracker is not None:
            status = "KILLED" if summary.interrupted else "FINISHED"
            final = "INTERRUPTED" if summary.interrupted else "FINISHED"
            tracker.end_sweep(status, {"final_status": final}, _summary_metrics(summary))
        if reporting and report is None:  # results on remote storage: the report reads MLflow
            report = start_report(summary)
        summary.report = finish_report(report)
        return summary
    finally:
        if exporter is not None:
            exporter.close()
        if early is not None and tracker is None:  # failed before the sweep took its store (Ray's start)
            early.discard()
        if own_ray:
            ray.shutdown()
        env.restore()


class _TuneEnv:
    """Ray Tune settings this sweep puts in the environment where the user set none, removed
    when the sweep ends (a later sweep in the same process computes its own)."""

    def __init__(self) -> None:
        self.mine: list[str] = []

    def default(self, key: str, value: str) -> None:
        if key not in os.environ:
            os.environ[key] = value
            self.mine.append(key)

    def restore(self) -> None:
        for key in self.mine:
            os.environ.pop(key, None)
        self.mine.clear()


def _go_live(tuner: tune.Tuner, searcher: Any, scheduler: Any, callbacks: list[tune.Callback]) -> None:
    """Give the Tuner this session's searcher, scheduler and callbacks once its ``tuner.pkl`` is written.

    The pickle then holds no live MLflow client (nor its credentials), and a restored Tuner
    runs with live objects built from the same config instead of the ones pickled at start.
    """
    local = tuner._local_tuner
    local._tune_config.search_alg = searcher
    local._tune_config.scheduler = scheduler
    local.get_run_config().callbacks = callbacks


#: Settings of this process that Tune reads where it runs (a Ray Client's Tuner runs on the cluster).
_CLUSTER_ENV = (
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS",
    "RAY_AIR_NEW_OUTPUT",
    "TUNE_MAX_PENDING_TRIALS_PG",
    "MLFLOW_TRACKING_TOKEN",
    GRACE_ENV,
)


def _fit_on_cluster(
    trainable: Any,
    param_space: dict[str, Any],
    tune_config: tune.TuneConfig,
    run_config: tune.RunConfig,
    callbacks: list[tune.Callback],
    wanted: list[tune.Callback],
) -> tuple[tune.ResultGrid, list[tune.Callback], Any]:
    """Over ``ray://``: build and fit the Tuner in a task on the node that serves Ray Client (the
    head); return its results, the ``wanted`` callbacks and the scheduler as they ended there.

    Ray's own client-mode Tuner ships its config and callbacks as separate arguments, so the
    callbacks would hold a copy of the scheduler the trials never see (no verdicts, no lineage);
    one task argument keeps them one set of objects. The MLflow tracker's copy records on the
    cluster into the same parent run and delivers everything before the task returns; the
    storage path and tracking URI must therefore be reachable from the head.
    """
    env = {key: os.environ[key] for key in _CLUSTER_ENV if key in os.environ}
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    job = {
        "trainable": trainable,
        "param_space": param_space,
        "tune_config": tune_config,
        "run_config": run_config,
        "callbacks": callbacks,
        "wanted": [callbacks.index(c) for c in wanted],  # the rest may hold open files
        "env": env,
    }
    ref = ray.remote(_fit_here).options(num_cpus=0, scheduling_strategy=here).remote(job)
    try:
        return ray.get(ref)
    except KeyboardInterrupt:  # stop the Tuner and its trials; wait until it has ended their MLflow runs
        ray.cancel(ref)
        ray.wait([ref], timeout=60)
        raise


def _fit_here(job: dict[str, Any]) -> tuple[tune.ResultGrid, list[tune.Callback], Any]:
    """The task :func:`_fit_on_cluster` runs: the Tuner, live as in :func:`_go_live`, then fit."""
    os.environ.update(job["env"])
    callbacks, config = job["callbacks"], job["tune_config"]
    tuner = tune.Tuner(
        job["trainable"], param_space=job["param_space"], tune_config=config, run_config=job["run_config"]
    )
    _go_live(tuner, config.search_alg, config.scheduler, callbacks)
    try:
        return tuner.fit(), [callbacks[i] for i in job["wanted"]], config.scheduler
    finally:
        for callback in callbacks:
            if isinstance(callback, MlflowTrialCallback):
                callback.tracker.end_copy()


def _restore(path: str, trainable: Any, param_space: dict[str, Any]) -> tune.Tuner:
    """``Tuner.restore`` of the sweep in ``path``: unfinished trials continue, errored ones stay errored.

    Ray takes the searcher, scheduler and callbacks from the ``tuner.pkl`` written when the
    sweep started; the caller swaps in live ones built from the same config (Ray then
    restores the searcher's state, and :class:`SweepState` the scheduler's, from the snapshot).
    """
    if ray.util.client.ray.is_connected():
        raise ConfigError("resume: not over a ray:// client connection; submit the resume as a Ray job")
    try:
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=False, param_space=param_space
        )
    except Exception as exc:  # noqa: BLE001 - whatever Ray raises, the sweep directory is the problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"resume: cannot restore the Ray experiment in {path!r} ({first})") from None
    return tuner


def _export_best(
    cfg: SweepConfig,
    grid: tune.ResultGrid,
    tracker: SweepTracker,
    summary: SweepSummary,
    exporter: ModelExporter,
) -> None:
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
    if tracker.parent_run_id.startswith("pending-"):
        logger.warning("MLflow at %s is unreachable: the best model is not logged", tracker.uri)
        return
    spec = {
        "checkpoint": best.checkpoint.path,
        "config": best.config,
        "tracking_uri": tracker.uri,
        "run_id": tracker.parent_run_id,
        "register_as": cfg.tracking.register_model,
        "trial": summary.best_trial or "",
    }
    try:
        summary.model_uri = exporter.export(spec)
    except ExportError as exc:
        logger.warning("could not log the best model: %s", exc)


def start_report(summary: SweepSummary) -> subprocess.Popen | None:
    """Start writing the sweep's convergence report (``python -m analysis`` in a subprocess, so the
    driver stays lean and the best model's export runs meanwhile) beside its Ray results, logged
    to the parent run. From MLflow instead when the results are not on a local disk: call it
    once the tracker has delivered everything then."""
    parent = summary.parent_run_id
    if parent is not None and parent.startswith("pending-"):  # MLflow unreachable: write, do not log
        parent = None
    local = os.path.isdir(summary.results_dir)
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
    """Wait for :func:`start_report`'s subprocess; return report.md's path, or None with a warning
    (the sweep's record matters more than its report)."""
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


def _reporter(cfg: SweepConfig) -> CLIReporter:
    """Ray's status table with each trial's attempt and the convergence verdict."""
    metrics = {
        "epoch": "epoch",
        "attempt": "attempt",
        cfg.metric: cfg.metric,
        "val_loss": "val_loss",
        "verdict": "verdict",
    }
    return CLIReporter(
        metric_columns=metrics,
        parameter_columns=list(cfg.space.searched),
        max_report_frequency=30,
        metric=cfg.metric,
        mode=cfg.mode,
        sort_by_metric=True,
    )


def _convergence(scheduler: Any) -> ConvergenceScheduler | None:
    return scheduler if isinstance(scheduler, ConvergenceScheduler) else None


def _summarize(
    cfg: SweepConfig,
    grid: tune.ResultGrid,
    results_dir: str,
    started: float,
    tracker: SweepTracker | None,
    scheduler: ConvergenceScheduler | None,
    finished: FinishedTrials,
) -> SweepSummary:
    statuses: dict[str, int] = {}
    rows, epochs_run, restarts = [], 0, 0
    unfinished = {(r.metrics or {}).get("trial_id") for r in grid} - finished.ids - {None}
    for result in grid:
        last = result.metrics or {}
        if result.config is None:  # never started (the sweep was interrupted)
            continue
        tid = last.get("trial_id")
        decision = scheduler.decisions.get(tid) if scheduler is not None and tid else None
        status = final_status(
            last,
            result.config.get("epochs", cfg.trainable.epochs),
            errored=result.error is not None,
            action=decision.action if decision is not None else None,
        )
        if tid in unfinished:
            status = "INTERRUPTED"
        statuses[status] = statuses.get(status, 0) + 1
        if scheduler is not None and tid:
            lineage = scheduler.policy.lineage(tid)
            epochs_run += sum(r.epochs for r in lineage)
            restarts += len(lineage) - 1
        else:
            epochs_run += int(last.get("epoch", 0))
        rows.append(
            {
                **trial_params(result.config),
                "trial_id": tid,
                "status": status,
                "value": last.get(cfg.metric),
                "epochs": last.get("epoch"),
                "attempts": int(last.get("attempt", 0)) + 1,
                "verdict": decision.verdict.status if decision is not None and decision.verdict else None,
            }
        )
    best_value, best_params, best_trial, best_run = None, {}, None, None
    try:
        best = grid.get_best_result(cfg.metric, cfg.mode, scope="last")
    except RuntimeError:
        best = None
    if best is not None and best.metrics and cfg.metric in best.metrics:
        best_value = float(best.metrics[cfg.metric])
        best_params = trial_params(best.config)
        trial_id = best.metrics.get("trial_id")
        best_trial = name_of(trial_id, best.config)
        if tracker is not None and trial_id:
            best_run = tracker.run_ids.get(trial_id)
    return SweepSummary(
        name=cfg.name,
        metric=cfg.metric,
        mode=cfg.mode,
        best_value=best_value,
        best_params=best_params,
        best_trial=best_trial,
        statuses=statuses,
        epochs_run=epochs_run,
        epochs_budget=len(rows) * cfg.trainable.epochs,
        restarts=restarts,
        wall_s=time.time() - started,
        results_dir=results_dir,
        tracking_uri=tracker.uri if tracker else None,
        parent_run_id=tracker.parent_run_id if tracker else None,
        best_run_id=best_run,
        ui=ui_hint(tracker.uri, tracker.experiment_id) if tracker else None,
        trials=rows,
        interrupted=bool(unfinished),
    )


def _summary_metrics(s: SweepSummary) -> dict[str, float]:
    metrics: dict[str, float] = {
        "trials": float(sum(s.statuses.values())),
        "epochs_run": float(s.epochs_run),
        "epochs_saved": float(s.epochs_budget - s.epochs_run),
        "restarts": float(s.restarts),
        "wall_s": s.wall_s,
    }
    if s.best_value is not None:
        metrics[f"best_{s.metric}"] = s.best_value
    metrics.update({f"trials_{k.lower()}": float(v) for k, v in s.statuses.items()})
    return metrics
