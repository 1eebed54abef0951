"""``scheduler.*``'s schemas, one per scheduler name, and their registration with Hydra.

``orchestrator.config`` builds ``scheduler.*`` with the schema that ``scheduler.name`` chooses;
each ``conf/scheduler/<name>.yaml`` takes every key and default from its schema, registered
with Hydra by :func:`register_scheduler_schemas`, so that every default is written once, here (and, for
the convergence scheduler, in :class:`orchestrator.policy.ConvergenceSettings`). A value a
schema refuses is a :class:`orchestrator.policy.SettingError` naming its key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from orchestrator.policy import ConvergenceSettings, SettingError


@dataclass(frozen=True)
class ConvergenceSchedulerConfig(ConvergenceSettings):
    """``scheduler=convergence``: every other key, its default and allowed values are
    :class:`orchestrator.policy.ConvergenceSettings`'s (conf/scheduler/convergence.yaml takes them)."""

    name: str = "convergence"


@dataclass(frozen=True)
class AshaSchedulerConfig:
    """``scheduler=asha``: Ray Tune's asynchronous successive halving on the sweep metric, per epoch.

    Args:
        grace_period: epochs before a trial can be stopped (capped at the budget).
        reduction_factor: a rung keeps the top ``1 / reduction_factor``.
    """

    name: str = "asha"
    grace_period: int = 3
    reduction_factor: float = 3.0

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise SettingError("grace_period", "must be >= 1", self.grace_period)
        if not self.reduction_factor > 1:
            raise SettingError("reduction_factor", "must be > 1", self.reduction_factor)


@dataclass(frozen=True)
class MedianSchedulerConfig:
    """``scheduler=median``: Ray Tune's median stopping rule (a running mean below the median stops).

    Args:
        grace_period: epochs before a trial can be stopped.
        min_samples_required: trials that must have reached an epoch before it is judged.
    """

    name: str = "median"
    grace_period: int = 3
    min_samples_required: int = 3

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise SettingError("grace_period", "must be >= 1", self.grace_period)
        if self.min_samples_required < 1:
            raise SettingError("min_samples_required", "must be >= 1", self.min_samples_required)


@dataclass(frozen=True)
class FifoSchedulerConfig:
    """``scheduler=fifo``: every trial runs its whole budget (Ray Tune's FIFOScheduler).

    Args:
        grace_period: not used (nothing stops early); accepted so that an override shared by
            every scheduler, as conf/debug/default.yaml's, applies to this one too.
    """

    name: str = "fifo"
    grace_period: int | None = None


#: ``scheduler.*``'s schema, chosen by ``scheduler.name``.
SCHEDULER_SCHEMAS: dict[str, type] = {
    "convergence": ConvergenceSchedulerConfig,
    "fifo": FifoSchedulerConfig,
    "asha": AshaSchedulerConfig,
    "median": MedianSchedulerConfig,
}
SchedulerConfig = (
    ConvergenceSchedulerConfig | FifoSchedulerConfig | AshaSchedulerConfig | MedianSchedulerConfig
)
#: Hydra's config group holding each scheduler's schema as plain data (:func:`register_scheduler_schemas`).
SCHEMA_GROUP = "schema/scheduler"


def register_scheduler_schemas() -> None:
    """Register each scheduler's schema with Hydra, so its YAML takes every key and default from it.

    ``conf/scheduler/<name>.yaml`` lists ``/schema/scheduler@_here_: <name>`` in its defaults: the
    composed config then holds every key (overridable without ``+``) with the dataclass's
    default. The nodes are plain mappings, not structured configs, so that :func:`load_config`
    checks types and values with its one-line errors. Call it before Hydra composes a config.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in SCHEDULER_SCHEMAS.items():
        store.store(group=SCHEMA_GROUP, name=name, node={"name": name, **dataclasses.asdict(schema())})
