"""The sweep's config schemas: every key, its type and its default, written once, here.

``conf/`` holds values only where an option differs from these defaults: Hydra composes
``conf/config.yaml`` on top of :data:`SWEEP_SCHEMA` (this module's :class:`SweepConfig` as
plain data, every key but ``scheduler.*``) and each ``conf/scheduler/<name>.yaml`` on top of its
scheduler's schema (:mod:`orchestrator.scheduler_schemas`). :func:`register_schemas` puts both
in Hydra's ConfigStore; call it before Hydra composes. The nodes are plain mappings, not
structured configs, so :func:`orchestrator.config.load_config` checks every type and value
with its one-line errors. ``python -m orchestrator --cfg job`` prints the composed config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from orchestrator.scheduler_schemas import (
    ConvergenceSchedulerConfig,
    SchedulerConfig,
    register_scheduler_schemas,
)
from orchestrator.space import SearchSpace, parse_space
from trainables.hparams import DOMAINS

#: The name of the sweep's schema in Hydra's ConfigStore (``conf/config.yaml`` lists it first).
SWEEP_SCHEMA = "sweep_schema"


@dataclass(frozen=True)
class DataConfig:
    """``trainable.data.*``: where the dataset's files are and how it is split."""

    root: str | None = None  # directory holding mnist / fashion_mnist / cifar10 files
    val_fraction: float = 0.25  # share of the training split used for validation (stratified)
    split_seed: int = 0  # seeds the train/validation split
    max_samples: int | None = None  # subsample the training split to this many examples
    classes: list[int] | None = None  # keep only these labels, renumbered 0..k-1 (k model outputs)


@dataclass(frozen=True)
class MetricsConfig:
    """``trainable.metrics.*``: what the convergence diagnosis reads besides the objective.

    ``loss``: the series that must go down (None: ``val_loss``, or the objective itself when
    ``mode=min``); ``chance``: the objective's value for a random guess (None: unknown, as for
    a regression; the built-ins derive it for ``val_acc``); ``scale``: the unit of the policy's
    margins (None: 1 for a ``mode=max`` metric or the built-ins, else measured from the
    trials' first epochs)."""

    loss: str | None = None
    chance: float | None = None
    scale: float | None = None


@dataclass(frozen=True)
class TrainableConfig:
    """``trainable.*``: the model, its data, the epoch budget and the search space (``hparams``).

    ``model: function`` is the user's own train function ``fn`` (``module:function`` or a
    Hydra ``_target_`` with ``_partial_: true``); ``model_fn`` (``module:function``, ``hp ->
    nn.Module``) lets the best checkpoint be logged as an MLflow model. ``init_from`` warm-starts
    every trial (:mod:`orchestrator.warmstart`): a checkpoint file, a checkpoint or Ray trial
    directory, or an MLflow model URI (``models:/name/version``, ``runs:/id/model``)."""

    model: str = "mlp"  # mlp | cnn | function
    dataset: str = "digits"  # digits | mnist1d | spirals | mnist | fashion_mnist | cifar10 (built-ins)
    epochs: int = 20  # budget per trial (epochs of one attempt)
    checkpoint_every: int = 5  # save a Ray checkpoint every N epochs (and at the last one)
    data: DataConfig = field(default_factory=DataConfig)
    hparams: dict[str, Any] = field(default_factory=dict)  # fixed values and distributions
    fn: Any = None  # model=function: the train function
    model_fn: str | None = None  # model=function: builds the model for the MLflow model
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    init_from: str | None = None  # start every trial from these weights where names and shapes match

    @property
    def own(self) -> bool:
        """The user's own train function (``model: function``), not a built-in model."""
        return self.model == "function"


@dataclass(frozen=True)
class SearchConfig:
    """``search.*``: the Optuna sampler, seeded with the sweep seed; the study's store; an earlier
    sweep to continue (its trials are this sweep's history); configurations to try first."""

    algorithm: str = "tpe"  # tpe | random | cmaes | grid | nsga2
    n_startup_trials: int = 8  # random trials before TPE (or CMA-ES) models the results
    multivariate: bool = True  # TPE models the hyperparameters jointly
    grid_points: int = 3  # grid: values per numeric range (log-spaced for log ranges)
    cmaes_popsize: int | None = None  # None: CMA-ES's default population size
    # The Optuna study's store: a SQLAlchemy URL or a journal file (journal:<path>, or a path
    # ending .log). None: sqlite:///<dir>/optuna.db, <dir> that of a SQLite MLflow store, else
    # the launch directory.
    storage: str | None = None
    continue_from: str | None = None  # an earlier sweep (directory, study or sweep name): its trials
    enqueue: Any = None  # tried first: a list of {hp: value} and {best_of: <sweep>, count: k} items


@dataclass(frozen=True)
class ClusterConfig:
    """``local``: an embedded Ray on this machine; ``ray``: join the cluster at ``address``
    (else $RAY_ADDRESS, else ``auto``), waiting at most ``connect_timeout_s`` for it."""

    mode: str = "local"
    address: str | None = None
    num_cpus: int | None = None  # local: None is all the machine's cores
    num_gpus: int | None = None  # local: None is all visible GPUs
    connect_timeout_s: float = 30.0  # ray: give up (exit 2, nothing started) after this


@dataclass(frozen=True)
class TrackingConfig:
    """``token``: a bearer token for an MLflow server that asks for one (exported as
    $MLFLOW_TRACKING_TOKEN); write it as ``${oc.env:VAR}`` to keep it out of files. Like every
    secret-looking key (orchestrator/redact.py) it is never logged or printed."""

    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db
    token: str | None = None
    experiment: str | None = None  # None: the sweep name
    log_model: bool = True  # log the best trial's model (mlflow.pytorch) on the sweep's run
    register_model: str | None = None  # a name: also register that model in the Model Registry


@dataclass(frozen=True)
class ResourcesConfig:
    """``resources.*``: what one trial takes; fractional GPUs pack several trials on one GPU."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass(frozen=True)
class StorageConfig:
    """``storage.path``: Ray results; a relative path is taken from the launch directory."""

    path: str = "results"


@dataclass(frozen=True)
class FailureConfig:
    """``failure.max_failures``: retries of a crashed trial from its last checkpoint (-1: forever)."""

    max_failures: int = 1


@dataclass(frozen=True)
class SweepConfig:
    """The whole sweep. ``name`` names its Ray experiment directory and MLflow experiment;
    ``seed`` seeds the searcher (trial seeds derive from it); ``max_concurrent_trials`` None runs
    as many trials as the resources fit; ``metric`` with ``mode`` is the objective (``objectives``:
    several, the first of them the metric); ``verbose``
    is Ray Tune's progress output (0 silent, 1 status table, 2 per result); ``report`` writes the
    convergence report at the end and logs it to the parent run; ``check`` runs one trial for
    two epochs in this process instead of the sweep and prints what it reported."""

    name: str = "default"
    seed: int = 0
    num_samples: int = 24
    max_concurrent_trials: int | None = None
    metric: str = "val_acc"
    mode: str | None = (
        None  # None: from the metric's name (acc, f1, auc, r2: max; loss, mse, mae, error: min)
    )
    # Several objectives: a list of {metric: <reported key>, mode: max|min}, the first the primary
    # (it sets metric and mode); None: the one objective metric/mode. orchestrator/objectives.py.
    objectives: Any = None
    verbose: int = 1
    report: bool = True
    check: bool = False
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=ConvergenceSchedulerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    failure: FailureConfig = field(default_factory=FailureConfig)

    @property
    def space(self) -> SearchSpace:
        """The validated search space of the trainable's hyperparameters."""
        return parse_space(self.trainable.hparams, domains=None if self.trainable.own else DOMAINS)


def register_schemas() -> None:
    """Register the sweep's schema (every key but ``scheduler.*``) and each scheduler's with Hydra."""
    from hydra.core.config_store import ConfigStore

    node = dataclasses.asdict(SweepConfig())
    node.pop("scheduler")  # its keys depend on scheduler.name: conf/scheduler/<name>.yaml brings them
    ConfigStore.instance().store(name=SWEEP_SCHEMA, node=node)
    register_scheduler_schemas()
