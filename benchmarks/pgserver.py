"""A real PostgreSQL server on 127.0.0.1 for tests and benchmarks: ``postgres_server(root)``.

The server is Debian's (package ``postgresql``: ``initdb``, ``pg_ctl`` on the PATH or under
``/usr/lib/postgresql/<version>/bin``); ``.ci/run`` installs it where it is missing. A fresh
cluster is made under ``root`` (trust authentication, listening on a free port of 127.0.0.1
only, its socket in ``root``), a database is created, and the server is stopped and its files
removed on exit, even on error. PostgreSQL refuses to run as root: as root, the cluster is
made and run as the ``postgres`` user (the package creates it), which then owns ``root``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

PG_USER = "postgres"


def pg_bin(tool: str) -> str | None:
    """The path of PostgreSQL's ``tool`` (initdb, pg_ctl, createdb), or None when not installed."""
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return versions[-1] if versions else None


def available() -> bool:
    """Whether a PostgreSQL server can be started here."""
    return all(pg_bin(t) for t in ("initdb", "pg_ctl", "createdb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(command: list[str]) -> list[str]:
    """``command`` run as the ``postgres`` user when this process is root."""
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], timeout_s: float = 120) -> None:
    proc = subprocess.run(_as_owner(command), capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{os.path.basename(command[0])} failed: {(proc.stderr or proc.stdout).strip()[-800:]}"
        )


@contextmanager
def postgres_server(root: str, database: str = "mlflow") -> Iterator[str]:
    """Start PostgreSQL with its data under ``root``; yield ``postgresql://postgres@127.0.0.1:<port>/<database>``."""
    if not available():
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    os.makedirs(root, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
        os.chmod(root, 0o700)
    data, port = os.path.join(root, "data"), _free_port()
    _run([pg_bin("initdb"), "-D", data, "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"])
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = os.path.join(root, "server.log")
    _run([pg_bin("pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"])
    try:
        _wait(port)
        uri = f"postgresql://{PG_USER}@127.0.0.1:{port}/{database}"
        create_database(uri, database)
        yield uri
    finally:
        subprocess.run(
            _as_owner([pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def _wait(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"PostgreSQL did not answer on port {port} in {timeout_s:.0f} s") from None
            time.sleep(0.2)


def create_database(uri: str, name: str) -> None:
    """Create database ``name`` on the server of ``uri`` (a :func:`postgres_server` URI)."""
    host_port = uri.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    _run([pg_bin("createdb"), "-h", host, "-p", port, "-U", PG_USER, name])
