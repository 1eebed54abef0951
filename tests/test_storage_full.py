"""A storage path that fills up mid-sweep: one line, exit code 2, and what was recorded stays.

The results directory is a real 32 MiB tmpfs, filled to the last byte by this test as soon as the
first trial has reported; the MLflow store is elsewhere. ``chmod`` stops no root process (these
tests run as root), a full filesystem does. Mounting needs root (or CAP_SYS_ADMIN): the test is
skipped where ``mount -t tmpfs`` is refused.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env

from orchestrator.claim import storage_problem


@pytest.fixture
def tiny_disk(tmp_path):
    """``tmp_path / 'results'``: a 32 MiB tmpfs, unmounted afterwards."""
    where = tmp_path / "results"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> None:
    """Write zeros into ``directory/filler`` until the filesystem refuses (ENOSPC)."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 20))
                f.flush()
        except OSError:
            pass


def test_a_full_results_directory_is_named_by_a_probe_write(tiny_disk):
    assert storage_problem(str(tiny_disk), RuntimeError("anything")) is None
    _fill(tiny_disk)
    assert storage_problem(str(tiny_disk), EOFError("Ran out of input")) == "No space left on device"
    assert storage_problem("s3://bucket/x", EOFError()) is None
    assert storage_problem("/nowhere", OSError(30, "Read-only file system")) == "Read-only file system"


def _start_until_reported(cwd: Path, args: list[str], results: Path) -> subprocess.Popen:
    """Start ``python -m orchestrator ARGS`` (output captured); return once a trial has
    written its first result under ``results``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not glob.glob(str(results / "*" / "*" / "result.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no trial reported"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
def test_a_storage_path_filling_up_mid_sweep_ends_with_one_line_and_keeps_the_record(tmp_path, tiny_disk):
    db = tmp_path / "mlflow.db"
    args = ["debug=default", "trainable.epochs=30", "num_samples=6", f"storage.path={tiny_disk}",
            f"tracking.uri=sqlite:///{db}", "report=false"]  # fmt: skip
    proc = _start_until_reported(tmp_path, args, tiny_disk)
    _fill(tiny_disk)
    out, err = proc.communicate(timeout=600)

    (sweep_dir,) = [p for p in tiny_disk.iterdir() if p.is_dir()]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err[-3000:]
    assert lines == [f"error: storage.path: cannot write to '{sweep_dir}' any more (No space left on device)"]
    assert err.rstrip().endswith(lines[0]) and "sweep 'debug' finished" not in out
    # what was recorded stays: the sweep's own record, and MLflow's runs, every one of them ended
    record = json.loads((sweep_dir / "orchestrator.json").read_text())
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    runs = dict(con.execute("SELECT run_uuid, status FROM runs").fetchall())
    steps = con.execute("SELECT COUNT(*) FROM metrics WHERE key = 'val_loss'").fetchone()[0]
    con.close()
    assert runs[record["parent_run_id"]] == "FAILED"
    assert len(runs) >= 2 and "RUNNING" not in runs.values()
    assert steps >= 1  # the epochs reported before the disk filled are in MLflow
    assert os.path.getsize(sweep_dir / "orchestrator.json") > 0


@pytest.fixture
def freezer(tmp_path):
    """Freezes a directory tree (``chattr -R +i``: not even root may create, change or remove
    anything in it) and thaws it afterwards; skipped where the filesystem has no such flag."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    frozen: list[Path] = []
    yield lambda path: (frozen.append(path), subprocess.run(["chattr", "-R", "+i", str(path)], check=True))
    for path in frozen:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=False)


@pytest.mark.slow
def test_a_storage_path_turning_unwritable_mid_sweep_ends_with_one_line(tmp_path, freezer):
    """Every write into the results directory refused from the first report on (the tree made
    immutable: EPERM, as a read-only remount gives EROFS; a mounted filesystem cannot be made
    read-only while Ray holds files open for writing): Ray fails each trial and carries on;
    the sweep then ends with one line, exit code 2, and every MLflow run ended."""
    results, db = tmp_path / "results", tmp_path / "mlflow.db"
    args = ["debug=default", "trainable.epochs=30", "num_samples=4", f"storage.path={results}",
            f"tracking.uri=sqlite:///{db}", "report=false", "failure.max_failures=0"]  # fmt: skip
    proc = _start_until_reported(tmp_path, args, results)
    (sweep_dir,) = [p for p in results.iterdir() if p.is_dir()]
    freezer(sweep_dir)
    out, err = proc.communicate(timeout=600)

    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err[-3000:]
    assert lines == [f"error: storage.path: cannot write to '{sweep_dir}' any more (Operation not permitted)"]
    assert err.rstrip().endswith(lines[0]) and "Traceback" not in err.split(lines[0])[-1]
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    runs = dict(con.execute("SELECT run_uuid, status FROM runs").fetchall())
    con.close()
    record = json.loads((sweep_dir / "orchestrator.json").read_text())
    assert runs[record["parent_run_id"]] == "FAILED" and "RUNNING" not in runs.values()
