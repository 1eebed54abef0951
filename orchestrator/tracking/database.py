"""A database behind MLflow (``tracking.uri=postgresql://...``, ``mysql://``, ``mssql://``),
checked before Ray starts: its driver is installed, and the database answers and lets us in; a
local SQLite store: the sweep's experiment is not one that was deleted.

SQLAlchemy picks the driver (``postgresql://`` is psycopg 3 since SQLAlchemy 2.1; the
``[postgres]`` extra installs it). A problem is one ConfigError naming the key, with the URI's
password hidden.
"""

from __future__ import annotations

import os
import sqlite3

from orchestrator.errors import ConfigError

#: The extra that installs each backend's default driver.
EXTRAS = {"postgresql": "postgres"}
DATABASES = ("postgresql", "mysql", "mssql")


def is_database(uri: str) -> bool:
    """True for a URI whose scheme (before any ``+driver``) is a database SQLAlchemy serves."""
    return uri.split("://", 1)[0].split("+")[0] in DATABASES


def check_database(uri: str, key: str = "tracking.uri", timeout_s: int = 5) -> None:
    """Refuse a database URI whose driver is missing or whose database cannot be reached.

    Opens (and closes) one connection, giving up after ``timeout_s`` seconds.
    """
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except exc.ArgumentError as err:
        raise ConfigError(f"{key}: cannot parse the database URI ({err})") from None
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    try:
        url.get_dialect().import_dbapi()
    except ImportError as err:
        extra = EXTRAS.get(backend)
        hint = f"pip install 'convergence-hpo[{extra}]'" if extra else f"install the {err.name} module"
        raise ConfigError(f"{key}: the {backend} driver {err.name!r} is not installed ({hint})") from None
    except exc.NoSuchModuleError as err:
        raise ConfigError(f"{key}: no SQLAlchemy dialect for {shown!r} ({err})") from None
    args = {"connect_timeout": timeout_s} if backend in ("postgresql", "mysql") else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect():
            pass
    except exc.DBAPIError as err:
        reason = str(err.orig or err).strip().splitlines()
        first = reason[0].strip() if reason else "no reason given"
        raise ConfigError(f"{key}: cannot connect to {shown} ({first})") from None
    finally:
        engine.dispose()


def deleted_experiment(name: str, experiment_id: str, uri: str) -> str:
    """The one line for a sweep whose MLflow experiment was deleted (its runs wait in the trash)."""
    return (
        f"tracking.experiment: the MLflow experiment {name!r} (id {experiment_id}) is deleted; restore "
        f"it (mlflow experiments restore --experiment-id {experiment_id}, with MLFLOW_TRACKING_URI={uri}) "
        "or choose another name (tracking.experiment=...)"
    )


def check_sqlite_experiment(db_path: str, name: str, uri: str) -> None:
    """Refuse an experiment ``name`` that an existing SQLite store holds as deleted.

    Reads the store read-only with sqlite3 (no MLflow import, nothing written); a file that is
    not yet an MLflow store, or cannot be read, is left to the store's own opening.
    """
    if not os.path.isfile(db_path):
        return
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'deleted'",
                (name,),
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return
    if row is not None:
        raise ConfigError(deleted_experiment(name, str(row[0]), uri))
