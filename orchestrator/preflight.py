"""Checks of the world a config points at, made before anything starts (no Ray, no MLflow run).

A validated config can still name a storage path that cannot be written, data files that are
missing or malformed, a tracking URI that does not parse, or more CPUs/GPUs per trial than
this machine has (cluster=local). :func:`preflight` finds these in well under a second, so
the entry point exits with one ``error: <key>: <problem>`` line before Ray is imported, and
nothing (results directory, MLflow run, Ray session) is left behind. What only a running
cluster knows is checked again by the sweep once it has joined it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import socket
import sqlite3
import tempfile
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError
from orchestrator.init_source import check_init_from
from orchestrator.priors import check_prior_source
from orchestrator.study import KEY as STUDY_KEY
from orchestrator.study import local_file, resolve_url
from orchestrator.target import check_target
from orchestrator.tracking.database import check_database, check_sqlite_experiment, is_database
from orchestrator.tracking.uri import is_http, resolve_tracking_uri, sqlite_path
from trainables.data import DataError, check_data_root

#: ``trainable.fn``'s ``_target_`` for a Hydra app (:mod:`orchestrator.integrations.hydra_app`).
HYDRA_APP = "orchestrator.integrations.hydra_app.train"


def writable_dir(path: str, key: str) -> None:
    """Raise ConfigError naming ``key`` unless a directory can be created at ``path`` (or exists writable).

    A real write in the nearest existing ancestor (a probe directory, removed at once) decides:
    ``os.access`` says yes to root everywhere. Nothing is left behind.
    """
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=probe))
    except OSError as exc:
        raise ConfigError(f"{key}: cannot write to {path!r} ({exc.strerror} in {probe!r})") from None


def storage_dir(path: str, launch_dir: str) -> str:
    """The absolute storage directory (a URI is returned as it is); refuses one that cannot be written."""
    if "://" in path:
        return path
    full = os.path.abspath(os.path.join(launch_dir, os.path.expanduser(path)))
    writable_dir(full, "storage.path")
    return full


def local_gpu_count() -> int | None:
    """GPUs an embedded Ray would find here, or None when that cannot be known without Ray.

    Ray's rule: NVML's device count, capped by ``CUDA_VISIBLE_DEVICES`` when set. Without
    NVML, a machine with no ``/dev/nvidia*`` and no ``/dev/kfd`` (AMD) has none.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "NoDevFiles"):
        return 0
    count: int | None = None
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() == 0:
            found = ctypes.c_uint(0)
            ok = nvml.nvmlDeviceGetCount_v2(ctypes.byref(found)) == 0
            nvml.nvmlShutdown()
            count = found.value if ok else None
    except (OSError, AttributeError):
        if not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd"):
            count = 0
    if count is not None and visible is not None:
        count = min(count, len(visible.split(",")))
    return count


def check_local_resources(cfg: SweepConfig) -> None:
    """Refuse per-trial CPUs or GPUs beyond what an embedded Ray on this machine would have."""
    r, c = cfg.resources, cfg.cluster
    cpus = c.num_cpus if c.num_cpus is not None else os.cpu_count() or 1
    if r.cpus_per_trial > cpus:
        where = "cluster.num_cpus is" if c.num_cpus is not None else "this machine has"
        raise ConfigError(f"resources.cpus_per_trial: {r.cpus_per_trial:g} but {where} {cpus} CPUs")
    if r.gpus_per_trial > 0:
        gpus = c.num_gpus if c.num_gpus is not None else local_gpu_count()
        if gpus is not None and r.gpus_per_trial > gpus:
            where = "cluster.num_gpus is" if c.num_gpus is not None else "this machine has"
            raise ConfigError(f"resources.gpus_per_trial: {r.gpus_per_trial:g} but {where} {gpus} GPUs")


def check_tracking(cfg: SweepConfig, launch_dir: str) -> None:
    """Refuse a tracking URI that does not parse, a local store whose directory cannot be
    written, a tracking server nothing answers at, or a database whose driver is missing or
    that cannot be connected to; the sweep's experiment deleted in a SQLite store."""
    if not cfg.tracking.enabled:
        return
    uri = resolve_tracking_uri(cfg.tracking.uri, launch_dir)  # default: sqlite:///<launch dir>/mlflow.db
    db_path = sqlite_path(uri)
    if db_path is not None:
        writable_dir(os.path.dirname(db_path), "tracking.uri")
        check_sqlite_experiment(db_path, cfg.tracking.experiment or cfg.name, uri)
    elif is_http(uri):
        check_answers(uri, "tracking.uri")
    elif is_database(uri):
        check_database(uri, "tracking.uri")


def check_answers(url: str, key: str, timeout_s: float = 5.0) -> None:
    """Refuse an http(s) server nothing answers at (a TCP connect; skipped behind a proxy)."""
    parsed = urlparse(url)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{key}: bad port in {url!r}") from None
    host = parsed.hostname or ""
    if parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return  # only the proxy knows whether the server is there
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"{key}: nothing answers at {host}:{port} ({exc.strerror or exc})") from None


def check_study_storage(cfg: SweepConfig, launch_dir: str) -> str:
    """Refuse a study store (``search.storage``) that does not parse, whose file cannot be
    written, or whose database cannot be connected to; return its URL."""
    url = resolve_url(cfg, launch_dir)
    path = local_file(url)
    if path is None:
        check_database(url, STUDY_KEY)
        return url
    writable_dir(os.path.dirname(path), STUDY_KEY)
    if os.path.isdir(path):
        raise ConfigError(f"{STUDY_KEY}: {path!r} is a directory, not a store file")
    if url.startswith("sqlite:") and os.path.isfile(path):
        _check_optuna_file(path)
    return url


def _check_optuna_file(path: str) -> None:
    """Refuse an existing SQLite file that holds tables but not Optuna's (MLflow's store, say:
    Optuna would add its tables to it, then fail on the other schema). Read-only, with sqlite3."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"{STUDY_KEY}: {path!r} is not a SQLite database ({exc})") from None
    if tables and not {"studies", "version_info"} <= tables:
        shown_tables = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(
            f"{STUDY_KEY}: {path!r} is not an Optuna store (it holds the tables {shown_tables}); "
            "name another file"
        )


def check_hydra_app(spec: Any, launch_dir: str) -> None:
    """When ``trainable.fn`` is the Hydra app adapter: refuse a missing ``task``, ``config_dir``
    or ``config_name``, a config directory or file that does not exist (a relative directory is
    read from ``launch_dir``), or a task :func:`check_target` refuses."""
    if not isinstance(spec, Mapping) or spec.get("_target_") != HYDRA_APP:
        return
    for name in ("task", "config_dir", "config_name"):
        if not isinstance(spec.get(name), str) or not spec[name]:
            raise ConfigError(f"trainable.fn.{name}: required by {HYDRA_APP}, got {spec.get(name)!r}")
    directory = os.path.abspath(os.path.join(launch_dir, os.path.expanduser(spec["config_dir"])))
    if not os.path.isdir(directory):
        raise ConfigError(f"trainable.fn.config_dir: no directory {directory}")
    name = spec["config_name"]
    name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if not os.path.isfile(os.path.join(directory, name)):
        raise ConfigError(f"trainable.fn.config_name: no {name} in {directory}")
    check_target(spec["task"], launch_dir, "trainable.fn.task")


def check_data(cfg: SweepConfig) -> None:
    """Refuse data files that are missing or malformed (ConfigError naming ``trainable.data.*``);
    a user's function brings its own data."""
    if cfg.trainable.own:
        return
    try:
        check_data_root(cfg.trainable.dataset, cfg.trainable.data.root)
    except DataError as exc:
        raise ConfigError(f"trainable.{exc}") from None


def preflight(cfg: SweepConfig, launch_dir: str) -> str:
    """Every check of storage, data, the prior's file, tracking, the study's store,
    (cluster=local) resources and the warm start's source; raises ConfigError.

    Returns the absolute storage directory (or URI), as :func:`storage_dir` gives it.
    """
    storage = storage_dir(cfg.storage.path, launch_dir)
    if cfg.trainable.own:
        check_target(cfg.trainable.fn, launch_dir, "trainable.fn")
        check_hydra_app(cfg.trainable.fn, launch_dir)
        if cfg.trainable.model_fn is not None:
            check_target(cfg.trainable.model_fn, launch_dir, "trainable.model_fn")
    check_data(cfg)
    check_prior_source(getattr(cfg.scheduler, "prior", None), launch_dir)
    check_tracking(cfg, launch_dir)
    check_study_storage(cfg, launch_dir)
    if cfg.cluster.mode == "local":
        check_local_resources(cfg)
    check_init_from(cfg, launch_dir)  # last: a subprocess that imports torch (and MLflow for a URI)
    return storage
