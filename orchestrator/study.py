"""The sweep's Optuna study, kept in a store that outlives the sweep (``search.storage``).

Every sweep writes one study, named as its results directory (``<name>_<YYYYmmdd-HHMMSS>``),
into the store ``search.storage`` names: a SQLAlchemy URL (``sqlite:///...``,
``postgresql://...``, ``mysql://...``), or a journal file (``journal:<path>``, or a path
ending ``.log``). The default is ``sqlite:///<dir>/optuna.db`` with ``<dir>`` the directory of
a SQLite MLflow store, else the launch directory. The searcher asks and tells that study, so it
holds each trial's parameters, intermediate values and final state as the scheduler decided
it (COMPLETE, PRUNED, FAIL), written as trials finish. The study's user attributes say which
sweep wrote it (:data:`ATTR_SWEEP`...), so a later sweep can find it by sweep name
(:mod:`orchestrator.history`).

Optuna is imported where a store is opened, so the checks before Ray starts stay light.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.schema import SweepConfig
from orchestrator.tracking.uri import directory_lock, resolve_tracking_uri, sqlite_path

KEY = "search.storage"
#: The default store's file name (beside a SQLite MLflow store, else in the launch directory).
DEFAULT_FILE = "optuna.db"
JOURNAL = "journal:"
#: The study's user attributes that name the sweep that wrote it.
ATTR_SWEEP, ATTR_STARTED, ATTR_RUN = "sweep", "started", "mlflow_parent_run_id"
ATTR_METRIC, ATTR_MODE, ATTR_OBJECTIVES = "metric", "mode", "objectives"
#: What optuna-dashboard listens on by default.
DASHBOARD = "http://127.0.0.1:8080"
_SQLALCHEMY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def resolve_url(cfg: SweepConfig, launch_dir: str) -> str:
    """The study store's URL for ``cfg``: ``search.storage`` made absolute, or the default.

    A relative SQLite or journal path is taken from ``launch_dir``; a journal store is written
    ``journal:<absolute path>``. Raises ConfigError naming ``search.storage`` for a value that is
    neither a SQLAlchemy URL nor a journal path.
    """
    value = cfg.search.storage
    if value is None:
        tracked = resolve_tracking_uri(cfg.tracking.uri, launch_dir) if cfg.tracking.enabled else ""
        db = sqlite_path(tracked)
        directory = os.path.dirname(db) if db else os.path.abspath(launch_dir)
        return f"sqlite:///{os.path.join(directory, DEFAULT_FILE)}"
    if value.startswith(JOURNAL) or (value.endswith(".log") and "://" not in value):
        path = value.removeprefix(JOURNAL)
        if not path:
            raise ConfigError(f"{KEY}: expected journal:<file path>, got {value!r}")
        return JOURNAL + os.path.abspath(os.path.join(launch_dir, os.path.expanduser(path)))
    if not _SQLALCHEMY.match(value):
        raise ConfigError(
            f"{KEY}: expected a database URL (sqlite:///path/optuna.db, postgresql://host/db) or a "
            f"journal file (journal:path or a path ending .log), got {value!r}"
        )
    if value.startswith("sqlite"):
        path = sqlite_path(value) or ""
        if not path:
            raise ConfigError(f"{KEY}: expected sqlite:///<path>, got {value!r}")
        return f"sqlite:///{os.path.abspath(os.path.join(launch_dir, os.path.expanduser(path)))}"
    return value


def local_file(url: str) -> str | None:
    """The file behind a SQLite or journal store URL, None for a database server."""
    if url.startswith(JOURNAL):
        return url.removeprefix(JOURNAL)
    return sqlite_path(url) or None


def shown(url: str) -> str:
    """``url`` with any password hidden (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def dashboard_command(url: str) -> str:
    """The command that opens the store in optuna-dashboard (the ``[dashboard]`` extra)."""
    return f"optuna-dashboard {local_file(url) if url.startswith(JOURNAL) else shown(url)}"


def open_storage(url: str, *, create: bool = True) -> Any:
    """The Optuna storage at ``url``; ``create=False`` returns None for a store file that does not
    exist yet (nothing is made). A store that cannot be opened is one ConfigError."""
    import optuna

    path = local_file(url)
    if path is not None and not create and not os.path.isfile(path):
        return None
    try:
        if url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend

            os.makedirs(os.path.dirname(path or "") or ".", exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(path or ""))
        with directory_lock(path):  # two sweeps starting at once would both create its tables
            if path is not None:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - Optuna, SQLAlchemy or the OS: the store is the problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{KEY}: cannot open {shown(url)} ({first[:300]})") from None


@dataclass(frozen=True)
class StudyInfo:
    """A study in a store and what its user attributes say about the sweep that wrote it."""

    url: str
    name: str
    sweep: str | None = None
    parent_run_id: str | None = None
    metric: str | None = None
    mode: str | None = None
    started: float = 0.0
    directions: int = 1  # objectives the study optimised (more than one: several objectives)
    objectives: tuple[tuple[str, str], ...] = ()  # several: (metric, mode) of each, as it recorded them


def studies(storage: Any, url: str) -> list[StudyInfo]:
    """Every study in ``storage`` (at ``url``), as :class:`StudyInfo`."""
    found = []
    for s in storage.get_all_studies():
        attrs = s.user_attrs
        modes = ["max" if d.name == "MAXIMIZE" else "min" for d in s.directions]
        mode = attrs.get(ATTR_MODE) or modes[0]
        metrics = attrs.get(ATTR_OBJECTIVES) or []
        found.append(
            StudyInfo(
                url=url,
                name=s.study_name,
                sweep=attrs.get(ATTR_SWEEP),
                parent_run_id=attrs.get(ATTR_RUN),
                metric=attrs.get(ATTR_METRIC),
                mode=mode,
                started=float(attrs.get(ATTR_STARTED, 0.0)),
                directions=len(s.directions),
                objectives=tuple(zip(metrics, modes, strict=False)) if len(modes) > 1 else (),
            )
        )
    return found


def create_sweep_study(storage: Any, name: str, cfg: SweepConfig, attrs: dict[str, Any]) -> Any:
    """Create the sweep's study ``name`` (its direction from ``mode``; with several objectives its
    ``directions``, one per objective) with user attributes naming the sweep, its objective(s),
    when it started, plus ``attrs``; return it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the searcher does: no line per study
    modes = [o["mode"] for o in cfg.objectives] if cfg.objectives else [cfg.mode]
    directions = ["maximize" if mode == "max" else "minimize" for mode in modes]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    own = {ATTR_SWEEP: cfg.name, ATTR_METRIC: cfg.metric, ATTR_MODE: cfg.mode, ATTR_STARTED: time.time()}
    own[ATTR_OBJECTIVES] = [o["metric"] for o in cfg.objectives] if cfg.objectives else None
    for key, value in {**own, **attrs}.items():
        if value is not None:
            study.set_user_attr(key, value)
    return study


def study_line(url: str, storage: Any, name: str) -> tuple[str, str]:
    """Where the study is (``<name> in <url>``) and how to look at it in optuna-dashboard."""
    try:
        study_id = storage.get_study_id_from_name(name)
        page = f"   then open {DASHBOARD}/dashboard/studies/{study_id}"
    except Exception:  # noqa: BLE001 - the store went away: the command alone
        page = ""
    return f"{name} in {shown(url)}", f"{dashboard_command(url)}{page}"


__all__ = [
    "StudyInfo",
    "create_sweep_study",
    "dashboard_command",
    "open_storage",
    "resolve_url",
    "shown",
    "studies",
    "study_line",
]
