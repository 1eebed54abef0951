"""The Ray Tune side of a sweep: its Tuner, configs, progress table, and where ``fit`` runs.

Locally the Tuner runs in this process; over ``ray://`` (Ray Client) it runs in one task on
the head (:func:`fit`). Either way the Tuner gets this session's live searcher, scheduler and
callbacks after its ``tuner.pkl`` was written (:func:`go_live`), so the pickle holds no live
MLflow client and a restored Tuner runs with objects built from the same config.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.stopper import Stopper
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.callbacks import MlflowTrialCallback, trial_name
from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError
from orchestrator.policy import DECISION_WIDTH
from orchestrator.scheduling import loss_of
from orchestrator.tracking import GRACE_ENV

#: Tune warns when it forces experiment snapshots this often (0: never).
SNAPSHOT_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
#: Settings of this process that Tune reads where it runs (a Ray Client's Tuner runs on the cluster).
CLUSTER_ENV = (
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING",
    "RAY_AIR_NEW_OUTPUT",
    "TUNE_MAX_PENDING_TRIALS_PG",
    SNAPSHOT_WARNING_ENV,
    "MLFLOW_TRACKING_TOKEN",
    GRACE_ENV,
)


class TuneEnv:
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


class ContractStopper(Stopper):
    """Ends the whole sweep once some trial broke the metric contract and none has kept it
    (:meth:`orchestrator.scheduler.ConvergenceScheduler.all_broken`): the user's trainable, not
    a configuration, is at fault, and every further trial would fail the same way."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.scheduler is not None and self.scheduler.all_broken()


def tune_config(cfg: SweepConfig, searcher: Any, scheduler: Any, trials: int, concurrent: int) -> Any:
    """The sweep's ``TuneConfig``: actors reused, trials named ``trial_<index>_<id>``."""
    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=trials,
        max_concurrent_trials=concurrent,
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )


def run_config(cfg: SweepConfig, experiment: str, storage: str, convergence: Any) -> Any:
    """The sweep's ``RunConfig``; the convergence scheduler adds its verdict table and stopper."""
    return tune.RunConfig(
        name=experiment,
        storage_path=storage,
        verbose=cfg.verbose,
        stop=ContractStopper(convergence) if convergence is not None else None,
        progress_reporter=reporter(cfg) if convergence is not None and cfg.verbose else None,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
        failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
    )


def reporter(cfg: SweepConfig) -> CLIReporter:
    """Ray's status table with each trial's attempt and the policy's decision on it
    (``running``, ``pruned: rank rule at epoch 3``, ...; not the verdict, which is only the
    curve's diagnosis: a trial the rank rule prunes may still be ``progressing``)."""
    loss = loss_of(cfg)
    metrics = {
        "epoch": "epoch",
        "attempt": "attempt",
        cfg.metric: cfg.metric,
        loss: loss,
        "decision": "decision",
    }
    return _Reporter(
        metric_columns=metrics,
        parameter_columns=list(cfg.space.searched),
        max_report_frequency=30,
        metric=cfg.metric,
        mode=cfg.mode,
        sort_by_metric=False,  # sorted by _Reporter: Ray's sort fails on trials without a value
        max_column_length=DECISION_WIDTH,  # Ray cuts longer texts and appends a hash
    )


class _Reporter(CLIReporter):
    """Ray's status table, trials sorted best first by the objective, those without a number
    (stopped at the contract check, or not reported yet) last, in their order."""

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        sign = -1.0 if self._mode == "max" else 1.0

        def key(trial: Any) -> tuple[int, float]:
            value = (trial.last_result or {}).get(self._metric)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
            return (0, sign * float(value)) if number else (1, 0.0)

        super().report(sorted(trials, key=key), done, *sys_info)


def go_live(tuner: tune.Tuner, searcher: Any, scheduler: Any, callbacks: list[tune.Callback]) -> None:
    """Give the Tuner this session's searcher, scheduler, stopper and callbacks once its
    ``tuner.pkl`` is written."""
    local = tuner._local_tuner
    local._tune_config.search_alg = searcher
    local._tune_config.scheduler = scheduler
    run = local.get_run_config()
    run.callbacks = callbacks
    if isinstance(run.stop, ContractStopper):
        run.stop = ContractStopper(scheduler)


def restore_tuner(path: str, trainable: Any, param_space: dict[str, Any]) -> tune.Tuner:
    """``Tuner.restore`` of the sweep in ``path``: unfinished trials continue, errored ones stay errored.

    Ray takes the searcher, scheduler and callbacks from the ``tuner.pkl`` written when the
    sweep started; the caller swaps in live ones built from the same config (Ray then
    restores the searcher's state, and ``SweepState`` the scheduler's, from the snapshot).
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


def fit_on_cluster(job: dict[str, Any]) -> tuple[tune.ResultGrid, list[tune.Callback], Any]:
    """Over ``ray://``: build and fit the Tuner in a task on the node that serves Ray Client (the
    head); return its results, the ``wanted`` callbacks and the scheduler as they ended there.

    ``job`` holds ``trainable``, ``param_space``, ``tune_config``, ``run_config``, ``callbacks``
    and ``wanted`` (indexes into ``callbacks``; the rest may hold open files). Ray's own
    client-mode Tuner ships its config and callbacks as separate arguments, so the callbacks
    would hold a copy of the scheduler the trials never see (no verdicts, no lineage); one task
    argument keeps them one set of objects. The MLflow tracker's copy records on the cluster
    into the same parent run and delivers everything before the task returns; the storage path
    and tracking URI must therefore be reachable from the head.
    """
    job = {**job, "env": {key: os.environ[key] for key in CLUSTER_ENV if key in os.environ}}
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ref = ray.remote(_fit_here).options(num_cpus=0, scheduling_strategy=here).remote(job)
    try:
        return ray.get(ref)
    except KeyboardInterrupt:  # stop the Tuner and its trials; wait until it has ended their MLflow runs
        ray.cancel(ref)
        ray.wait([ref], timeout=60)
        raise


def _fit_here(job: dict[str, Any]) -> tuple[tune.ResultGrid, list[tune.Callback], Any]:
    """The task :func:`fit_on_cluster` runs: the Tuner, live as in :func:`go_live`, then fit."""
    os.environ.update(job["env"])
    callbacks, config = job["callbacks"], job["tune_config"]
    tuner = tune.Tuner(
        job["trainable"], param_space=job["param_space"], tune_config=config, run_config=job["run_config"]
    )
    go_live(tuner, config.search_alg, config.scheduler, callbacks)
    try:
        return tuner.fit(), [callbacks[i] for i in job["wanted"]], config.scheduler
    finally:
        for callback in callbacks:
            if isinstance(callback, MlflowTrialCallback):
                callback.tracker.end_copy()
