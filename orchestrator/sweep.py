"""Run one sweep: check inputs, start (or join) Ray, run the Tuner, record to MLflow, summarise.

Everything that can be known before a trial starts is checked first (config, storage path,
data files, tracking URI, resources against the cluster); a problem is a ConfigError and
nothing is started or recorded. :func:`run` is a few short phases: prepare, start Ray and
check the cluster, open the MLflow record, fit, finish (report, best model, end the record).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import tune

from orchestrator import preemption
from orchestrator import tuner as tuning
from orchestrator.callbacks import CsvLogger, JsonLogger, MlflowTrialCallback, VerdictCallback
from orchestrator.claim import claim_results_dir, results_name, storage_problem
from orchestrator.cluster import alive_nodes, check_resources, start_ray
from orchestrator.config import SweepConfig
from orchestrator.entry import train
from orchestrator.errors import ConfigError
from orchestrator.exporting import ModelExporter, WarmExporter, export_best
from orchestrator.history import StudyPlan, plan
from orchestrator.outcomes import Outcomes
from orchestrator.preflight import check_data, check_local_resources, preflight
from orchestrator.provenance import sweep_params, sweep_tags
from orchestrator.reporting import finish_report, report_location, start_report
from orchestrator.resume import SweepRecord, SweepState, backfill, config_data, read_record, write_record
from orchestrator.scheduler import ConvergenceScheduler
from orchestrator.scheduling import build_scheduler, keep_prior
from orchestrator.search import build_searcher, num_trials
from orchestrator.study import resolve_url, study_line
from orchestrator.summary import SweepSummary, summarize
from orchestrator.tracking import StoreOpening, SweepTracker, resolve_tracking_uri
from orchestrator.trials import param_space


def run(
    cfg: SweepConfig,
    *,
    resolved_yaml: str = "",
    overrides: tuple[str, ...] = (),
    callbacks: Sequence[tune.Callback] = (),
    checked_storage: str | None = None,
) -> SweepSummary:
    """Run the sweep described by ``cfg`` and return its summary.

    The resolved config goes into ``<sweep dir>/orchestrator.json`` before any trial starts, so
    :func:`resume` can finish the sweep if this driver dies. ``callbacks`` are Ray Tune
    callbacks added after the sweep's own. ``checked_storage`` is what
    :func:`orchestrator.preflight.preflight` returned when the caller already ran it from this
    working directory (the command line does, before it imports Ray): its checks (a database
    connection among them) are not run twice.
    """
    return _run(cfg, resolved_yaml, overrides, callbacks, None, checked_storage)


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


@dataclass
class _Sweep:
    """What the phases of one sweep share."""

    cfg: SweepConfig
    resolved_yaml: str
    overrides: tuple[str, ...]
    record: SweepRecord | None  # the resumed sweep's record; a new sweep's once written
    resuming: bool
    launch_dir: str
    storage: str
    uri: str | None
    experiment: str
    trials: int
    scheduler: Any
    outcomes: Outcomes
    started: float
    study: StudyPlan  # the Optuna study: its store; a new sweep's: what it continues, tries first
    searcher: Any = None
    env: tuning.TuneEnv = field(default_factory=tuning.TuneEnv)
    early: StoreOpening | None = None
    tracker: SweepTracker | None = None
    recorder: MlflowTrialCallback | None = None
    exporter: ModelExporter | None = None
    own_ray: bool = False
    lock: preemption.DriverLock | None = None  # held while this driver runs the sweep

    @property
    def convergence(self) -> ConvergenceScheduler | None:
        return self.scheduler if isinstance(self.scheduler, ConvergenceScheduler) else None


def _run(
    cfg: SweepConfig,
    resolved_yaml: str,
    overrides: tuple[str, ...],
    extra: Sequence[tune.Callback],
    record: SweepRecord | None,
    checked_storage: str | None = None,
) -> SweepSummary:
    started = time.time()  # the sweep's wall time counts its checks
    s = _prepare(cfg, resolved_yaml, overrides, record, started=started, checked_storage=checked_storage)
    try:
        s.own_ray = start_ray(cfg, s.launch_dir)
        preemption.install()  # ray.init replaced the SIGTERM handler with one that exits at once
        have = ray.cluster_resources()
        slots = check_resources(
            cfg, alive_nodes() or [{"CPU": have.get("CPU", 0.0), "GPU": have.get("GPU", 0.0)}]
        )
        trainable = tune.with_resources(
            train, {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
        )
        space = param_space(cfg, s.launch_dir)
        restored = tuning.restore_tuner(s.record.directory, trainable, space) if s.resuming else None
        _open_tracking(s)
        study = s.experiment if s.study.storage is not None else None
        s.searcher = build_searcher(cfg, s.study.storage, study, history=s.study.copied)
        concurrent = min(cfg.max_concurrent_trials or slots, s.trials)
        summary, grid = _fit(s, trainable, space, restored, concurrent, extra)
        return _finish(s, summary, grid)
    finally:
        _close(s)


def _prepare(
    cfg: SweepConfig,
    resolved_yaml: str,
    overrides: tuple[str, ...],
    record: SweepRecord | None,
    *,
    started: float,
    checked_storage: str | None = None,
) -> _Sweep:
    """Check everything knowable before Ray starts; build the searcher and scheduler; start
    opening a new local MLflow store (~2 s for SQLite) in a thread while Ray starts."""
    if record is None:
        launch_dir = os.getcwd()
        storage = checked_storage if checked_storage is not None else preflight(cfg, launch_dir)
        uri = resolve_tracking_uri(cfg.tracking.uri, launch_dir) if cfg.tracking.enabled else None
        experiment = results_name(cfg.name)  # claimed once the store is open (_open_tracking)
        lock = None  # taken once the sweep directory exists (_fit)
        study = plan(cfg, resolve_url(cfg, launch_dir), launch_dir)  # reads only; an unknown sweep: one line
    else:
        launch_dir, storage, experiment = record.launch_dir, record.storage, record.experiment
        uri, study = record.tracking_uri, StudyPlan(record.study_storage, new=False)
        check_data(cfg)
        if cfg.cluster.mode == "local":
            check_local_resources(cfg)
        lock = preemption.DriverLock(record.directory)
        if not lock.acquire() and "://" not in record.directory:
            raise ConfigError(f"resume: another driver is running the sweep in {record.directory}")
    trials = num_trials(cfg)
    scheduler = build_scheduler(cfg, trials, record)
    convergence = scheduler if isinstance(scheduler, ConvergenceScheduler) else None
    s = _Sweep(
        cfg=cfg,
        resolved_yaml=resolved_yaml,
        overrides=overrides,
        record=record,
        resuming=record is not None,
        launch_dir=launch_dir,
        storage=storage,
        uri=uri,
        experiment=experiment,
        trials=trials,
        scheduler=scheduler,
        outcomes=Outcomes(cfg.trainable.epochs, convergence),
        started=started,
        study=study,
        lock=lock,
    )
    s.env.default("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # with fast epochs Tune forces snapshots (every epoch checkpoints); its warning says nothing
    s.env.default(tuning.SNAPSHOT_WARNING_ENV, "0")
    if convergence is not None:  # Ray's classic table, which can show the verdicts; our contract check
        s.env.default("RAY_AIR_NEW_OUTPUT", "0")
        s.env.default("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if uri and record is None and cfg.cluster.mode == "local" and not ray.is_initialized():
        s.early = StoreOpening(uri, cfg.tracking.experiment or cfg.name)
    return s


def _open_tracking(s: _Sweep) -> None:
    """Open the MLflow record and the Optuna study: reopen a resumed sweep's runs (and log what its
    killed driver never delivered), or claim a new sweep's results directory (orchestrator/claim.py:
    two sweeps started in one second get two), create its study, then the parent run with the
    sweep's params, tags and config."""
    cfg = s.cfg
    if s.early is not None:
        s.tracker = s.early.tracker()
    elif s.uri:
        s.tracker = SweepTracker(s.uri, cfg.tracking.experiment or cfg.name)
    s.study.open()
    if not s.resuming:  # after the stores opened: a store refused leaves no directory behind
        s.experiment = claim_results_dir(s.storage, s.experiment)
        s.study.start(s.experiment, cfg)  # before the parent run: a study refused leaves no run
    if s.tracker is None:
        return
    s.recorder = MlflowTrialCallback(s.tracker, s.outcomes, s.convergence, cfg.metric)
    if s.record is not None and s.record.parent_run_id:
        s.recorder.mark_logged(s.tracker.resume(s.record.parent_run_id))  # logged steps are not logged again
        backfill(s.record.directory, s.tracker, s.recorder)
        return
    tags = sweep_tags(cfg, s.experiment, s.storage, s.launch_dir)
    tags.update(s.study.tags(s.experiment))
    files = {"config.yaml": s.resolved_yaml, "overrides.txt": "\n".join(s.overrides) + "\n"}
    s.tracker.start_sweep(cfg.name, sweep_params(cfg, s.trials), tags, files)
    s.study.note_run(s.experiment, s.tracker.parent_run_id)


def _callbacks(s: _Sweep, space: dict[str, Any], extra: Sequence[tune.Callback]) -> list[tune.Callback]:
    """The sweep's Tune callbacks, in order: snapshot state (first: its index is its key),
    verdicts into results, outcomes, Ray's logs, the MLflow record, the model export's warm-up."""
    callbacks: list[tune.Callback] = [SweepState(s.convergence, s.outcomes)]
    callbacks += [VerdictCallback(s.convergence)] if s.convergence is not None else []
    callbacks += [s.outcomes, JsonLogger(), CsvLogger()]
    callbacks += [s.recorder] if s.recorder is not None else []
    if s.tracker is not None and s.cfg.tracking.log_model:
        s.exporter = ModelExporter({"run": space["run"], "tracking_uri": s.tracker.uri})
        callbacks += [] if ray.util.client.ray.is_connected() else [WarmExporter(s.exporter, s.trials)]
    return callbacks + list(extra)


def _fit(
    s: _Sweep, trainable: Any, space: dict[str, Any], restored: Any, concurrent: int, extra: Sequence[Any]
) -> tuple[SweepSummary, tune.ResultGrid]:
    """Fit the Tuner (here, or on the head over ``ray://``) and summarise; a failure or Ctrl+C
    ends the MLflow record (FAILED / KILLED) before it propagates."""
    cfg = s.cfg
    s.env.default("TUNE_MAX_PENDING_TRIALS_PG", str(concurrent))
    callbacks = _callbacks(s, space, extra)
    if s.record is None:
        parent = s.tracker.parent_run_id if s.tracker is not None else None
        data = config_data(cfg)
        s.record = SweepRecord(
            s.experiment, s.storage, s.launch_dir, data, list(s.overrides), s.resolved_yaml, s.uri, parent
        )
        s.record.study_storage = s.study.url
        keep_prior(s.scheduler, s.record.directory)  # before the record: resumable only with it
        write_record(s.record)
        s.lock = preemption.DriverLock(s.record.directory)
        s.lock.acquire()
    tconf = tuning.tune_config(cfg, s.searcher, s.scheduler, s.trials, concurrent)
    results_dir = os.path.join(s.storage, s.experiment)
    rconf = tuning.run_config(cfg, s.experiment, s.storage, s.convergence)
    try:
        if ray.util.client.ray.is_connected():  # ray://: this process is a Ray Client
            grid = _fit_on_cluster(s, trainable, space, tconf, rconf, callbacks)
        else:
            tuner = restored or tune.Tuner(trainable, param_space=space, tune_config=tconf, run_config=rconf)
            tuning.go_live(tuner, s.searcher, s.scheduler, callbacks)
            grid = tuner.fit()
        _check_contract(s.convergence)
        summary = summarize(cfg, grid, results_dir, s.started, s.tracker, s.convergence, s.outcomes)
        if s.study.url and s.study.storage is not None:
            summary.study, summary.dashboard = study_line(s.study.url, s.study.storage, s.experiment)
        if (unwritable := storage_problem(results_dir)) is not None:  # Ray went on, trials failing
            raise OSError(unwritable)
    except BaseException as exc:
        full = storage_problem(results_dir, exc) if isinstance(exc, Exception) else None
        if s.tracker is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            s.tracker.end_sweep(status, {"final_status": "INTERRUPTED" if status == "KILLED" else "ERROR"})
        if full is not None:  # a full or read-only disk: one line; what MLflow has is kept, ended
            raise ConfigError(f"storage.path: cannot write to {results_dir!r} any more ({full})") from None
        raise
    return summary, grid


def _fit_on_cluster(
    s: _Sweep, trainable: Any, space: dict[str, Any], tconf: Any, rconf: Any, callbacks: list
) -> Any:
    """Fit on the head (:func:`orchestrator.tuner.fit_on_cluster`); take back the outcomes, the
    scheduler and what the MLflow record's copy recorded there."""
    wanted = [s.outcomes, *([s.recorder] if s.recorder is not None else [])]
    job = {
        "trainable": trainable,
        "param_space": space,
        "tune_config": tconf,
        "run_config": rconf,
        "callbacks": callbacks,
        "wanted": [callbacks.index(c) for c in wanted],
    }
    grid, back, s.scheduler = tuning.fit_on_cluster(job)
    s.outcomes = back[0]
    if s.tracker is not None and s.recorder is not None:
        s.tracker.adopt(back[1].tracker)
    return grid


def _check_contract(scheduler: ConvergenceScheduler | None) -> None:
    """A sweep whose every trial broke the metric contract is a user error, in one line."""
    if scheduler is not None and scheduler.all_broken():
        tid, problem = next(iter(scheduler.broken.items()))
        raise ConfigError(f"{problem} (trial {tid}; every trial so far broke the metric contract)")


def _finish(s: _Sweep, summary: SweepSummary, grid: tune.ResultGrid) -> SweepSummary:
    """Write the report and export the best model (both subprocesses, at once), end the record."""
    reporting = s.cfg.report and bool(summary.trials) and not summary.interrupted
    report = start_report(summary) if reporting and os.path.isdir(summary.results_dir) else None
    if s.exporter is not None and s.tracker is not None and not summary.interrupted:
        export_best(s.cfg, grid, s.tracker, summary, s.exporter)
    if s.tracker is not None:
        status = "KILLED" if summary.interrupted else "FINISHED"
        final = "INTERRUPTED" if summary.interrupted else "FINISHED"
        where = report_location(summary) if reporting else None  # the report is written after
        tags = {**summary.tags(), "final_status": final}
        s.tracker.end_sweep(status, tags, summary.metrics(), summary.markdown(where))
    if not summary.interrupted and s.record is not None:
        s.record.finished = True  # resume=auto passes it by
        try:
            write_record(s.record)
        except OSError as exc:
            raise ConfigError(
                f"storage.path: cannot write to {s.record.directory!r} any more ({exc})"
            ) from None
    if reporting and report is None:  # results on remote storage: the report reads MLflow
        report = start_report(summary)
    summary.report = finish_report(report)
    return summary


def _close(s: _Sweep) -> None:
    """Whatever happened: stop the export, a store opened for nothing, our Ray, our Tune settings."""
    if s.lock is not None:
        s.lock.release()
    if s.exporter is not None:
        s.exporter.close()
    if s.early is not None and s.tracker is None:  # failed before the sweep took its store (Ray's start)
        s.early.discard()
    if s.own_ray:
        ray.shutdown()
    s.env.restore()
