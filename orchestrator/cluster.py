"""Where trials run: the cluster to join and how many trials fit on it at once.

Pure rules over plain numbers (``check_resources``) plus the two facts only a live Ray knows
(``alive_nodes``) and a bounded reachability probe (``reachable``), so an unreachable cluster
or a trial no node can hold is a one-line ConfigError before anything starts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings

import ray

from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError

logger = logging.getLogger(__name__)


def cluster_address(cfg: SweepConfig) -> str:
    """The cluster to join (cluster=ray): ``cluster.address``, else $RAY_ADDRESS, else ``auto``."""
    return cfg.cluster.address or os.environ.get("RAY_ADDRESS") or "auto"


def reachable(address: str, timeout_s: float, where: str = "cluster.address") -> str:
    """The address to pass to ``ray.init`` once something answers there within ``timeout_s``.

    Ray itself retries an unreachable address for minutes; a TCP connect bounds the wait.
    ``auto`` is the cluster `ray start` recorded on this machine.
    """
    target = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            found = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            found = None
        if not found:
            raise ConfigError(
                f"{where}: no Ray cluster is running on this machine (auto); start one with "
                "`ray start --head` or set cluster.address=<host>:<port>"
            )
        target = found
    rest = target.split("://", 1)[1] if "://" in target else target
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{where}: expected auto, <host>:<port> or ray://<host>:<port>, got {address!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)).close()
            return address
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"{where}: cannot reach the Ray cluster at {target!r} within {timeout_s:g}s "
                    f"({exc.strerror or exc})"
                ) from None
            time.sleep(1.0)


def join_failure(exc: BaseException, address: str) -> str:
    """Why ``ray.init(address)`` failed, in one line, with what to do where we know it.

    Ray Client's "Initialization failure from server:" carries the head's traceback on the
    lines after it: its last line is the reason.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reason = f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    if "uthentication" in reason:  # token auth is on there: say how to give the token
        reason += "; export RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token"
    elif address.startswith("ray://") and "timeout" in reason:  # something else answers there
        reason += "; is that the head's Ray Client port (`ray start --ray-client-server-port`, 10001)?"
    return reason


def check_resources(cfg: SweepConfig, have: dict[str, float] | list[dict[str, float]]) -> int:
    """Refuse per-trial resources no node has; return how many trials fit at once.

    ``have`` is one mapping of resource totals (one node) or one per node of the cluster; a
    missing ``GPU`` entry means not known yet (only CPUs are checked then). A trial is one
    process, so it must fit on a single node: ``resources.gpus_per_trial: 0.25`` packs four
    trials per GPU, ``2`` takes two whole GPUs of one node. Trials at once = the sum over nodes
    of min(node CPUs // cpus_per_trial, node GPUs // gpus_per_trial).
    """
    nodes = [have] if isinstance(have, dict) else have
    r = cfg.resources
    where = "the cluster has" if len(nodes) == 1 else "its largest node has"
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    if r.cpus_per_trial > cpus:
        raise ConfigError(f"resources.cpus_per_trial: {r.cpus_per_trial:g} but {where} {cpus:g} CPUs")
    if any("GPU" not in n for n in nodes):
        return 1
    gpus = max(n["GPU"] for n in nodes)
    if r.gpus_per_trial > gpus:
        raise ConfigError(f"resources.gpus_per_trial: {r.gpus_per_trial:g} but {where} {gpus:g} GPUs")
    slots = sum(_node_slots(r.cpus_per_trial, r.gpus_per_trial, n) for n in nodes)
    if slots == 0:
        raise ConfigError(
            f"resources: no node has both {r.cpus_per_trial:g} CPUs and {r.gpus_per_trial:g} GPUs for a trial"
        )
    return slots


def _node_slots(cpus_per_trial: float, gpus_per_trial: float, node: dict[str, float]) -> int:
    fits = [int(node.get("CPU", 0.0) // cpus_per_trial)] if cpus_per_trial > 0 else []
    if gpus_per_trial > 0:
        fits.append(int(node.get("GPU", 0.0) / gpus_per_trial + 1e-9))
    return min(fits)


def alive_nodes() -> list[dict[str, float]]:
    """Each live node's resource totals (CPU and GPU, 0 when it has none)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return [{"CPU": float(n.get("CPU", 0.0)), "GPU": float(n.get("GPU", 0.0))} for n in nodes]


def launch_env(cfg: SweepConfig, launch_dir: str) -> dict | None:
    """The runtime environment that makes a user's train function importable on every node of
    a joined cluster: the launch directory as the trials' working directory (uploaded by Ray;
    results, MLflow stores and VCS data left out). None for the built-ins, and inside a
    ``ray job submit`` job, whose own ``--working-dir`` already is the launch directory."""
    if not cfg.trainable.own or "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return None
    excludes = [".git", "__pycache__", "mlruns", "mlflow.db*", "*.ckpt", "outputs", "multirun"]
    storage = os.path.abspath(os.path.join(launch_dir, cfg.storage.path))
    if "://" not in cfg.storage.path and storage.startswith(os.path.join(launch_dir, "")):
        excludes.append("/" + os.path.relpath(storage, launch_dir))
    return {"working_dir": launch_dir, "excludes": excludes}


def start_ray(cfg: SweepConfig, launch_dir: str | None = None) -> bool:
    """Start the embedded Ray (cluster=local) or join the cluster (cluster=ray) unless Ray is
    already initialised; True when this call connected.

    Joining a cluster with a user's train function ships ``launch_dir`` to the nodes
    (:func:`launch_env`). An unreachable cluster is a ConfigError naming ``cluster.address``,
    raised within ``cluster.connect_timeout_s`` and before anything is created.
    """
    if ray.is_initialized():
        return False
    if cfg.cluster.mode == "ray":
        _join(cfg, launch_env(cfg, launch_dir) if launch_dir else None)
        return True
    ray.init(
        address="local",  # a new embedded Ray, never a `ray start` cluster found on this machine
        num_cpus=cfg.cluster.num_cpus,
        num_gpus=cfg.cluster.num_gpus,
        include_dashboard=False,
        log_to_driver=True,
        logging_level=logging.WARNING,
    )
    return True


def _join(cfg: SweepConfig, runtime_env: dict | None = None) -> None:
    """Join the cluster at :func:`cluster_address`; a Ray Client session the head failed to start
    (it can, when busy) is asked for once more."""
    from_env = cfg.cluster.address is None and "RAY_ADDRESS" in os.environ
    where = "cluster.address (from $RAY_ADDRESS)" if from_env else "cluster.address"
    address = reachable(cluster_address(cfg), cfg.cluster.connect_timeout_s, where)
    retries = 1
    while True:
        try:
            with warnings.catch_warnings():  # Ray Client warns before it raises: the error says it once
                warnings.filterwarnings("ignore", "Ray Client connection timed out")
                ray.init(
                    address=address,
                    runtime_env=runtime_env,
                    log_to_driver=True,
                    logging_level=logging.WARNING,
                )
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here; all mean "cannot join"
            reason = join_failure(exc, address)
            if not (isinstance(exc, ConnectionAbortedError) and retries):
                raise ConfigError(f"{where}: cannot join the Ray cluster at {address!r} ({reason})") from None
            retries -= 1
            logger.warning("%s: Ray Client could not start a session (%s); trying once more", address, reason)
            ray.shutdown()
