"""Tracking URIs: the one place that parses them (which store, where its SQLite file lies, a server or not),
and the directory lock under which a store file is first created.

Imports no MLflow, so the preflight checks can use it before anything heavy is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from urllib.parse import urlparse

from orchestrator.errors import ConfigError

_URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
_SQLITE = "sqlite:///"
_HTTP = ("http://", "https://")
_CONCURRENT_SCHEMES = ("http", "https", "postgresql", "mysql", "mssql")
LANES = 4  # runs written at once to a store that takes concurrent writes


def sqlite_path(uri: str) -> str | None:
    """The file path in a ``sqlite:///<path>`` URI, as written there; None for any other URI.

    ``sqlite:////data/m.db`` holds the absolute path ``/data/m.db``, ``sqlite:///m.db`` the
    relative ``m.db``, ``sqlite:///`` the empty path ``""``. Any other form (``sqlite://m.db``,
    ``sqlite+pysqlite:///m.db``) is not read as a SQLite file: None.
    """
    return uri[len(_SQLITE) :] if uri.startswith(_SQLITE) else None


@contextlib.contextmanager
def directory_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the directory of the store file ``path`` (no lock file is
    made) while the store is created or migrated, so one process at a time does it; None, or a
    directory that cannot be locked (``flock`` refused, as on some network filesystems), goes
    unlocked."""
    fd = None
    if path is not None:
        try:
            fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def is_http(uri: str) -> bool:
    """True for a tracking server's URI: it starts with ``http://`` or ``https://``."""
    return uri.startswith(_HTTP)


def delivery_lanes(uri: str) -> int:
    """How many runs the writer delivers to at once: :data:`LANES` for a tracking server or a
    database server (they take concurrent writes), 1 for SQLite and file stores (one writer at a
    time there: concurrency would only wait on the file's lock)."""
    scheme = urlparse(uri).scheme.split("+")[0]
    return LANES if scheme in _CONCURRENT_SCHEMES else 1


def resolve_tracking_uri(uri: str | None, launch_dir: str) -> str:
    """The tracking URI to use: ``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///<launch_dir>/mlflow.db``.

    A relative SQLite path is made absolute against ``launch_dir`` (trials and servers run
    elsewhere). Raises ConfigError naming ``tracking.uri`` for a URI that does not parse.
    """
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if chosen is None:
        return f"{_SQLITE}{os.path.join(os.path.abspath(launch_dir), 'mlflow.db')}"
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
        path = sqlite_path(chosen)
        if not path:
            raise ConfigError(f"tracking.uri: expected sqlite:///<path>, got {chosen!r}")
        if not os.path.isabs(path):
            return f"{_SQLITE}{os.path.join(os.path.abspath(launch_dir), path)}"
    return chosen


def ui_hint(uri: str, experiment_id: str) -> str:
    """How a user opens the sweep in the MLflow UI (model-training view of the experiment)."""
    view = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if is_http(uri):
        return f"{uri.rstrip('/')}/{view}"
    return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{view}"
