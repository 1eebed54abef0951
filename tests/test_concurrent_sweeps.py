"""Two sweeps at once on one store: same name, same storage.path, same MLflow store.

Each gets its own results directory (claimed with ``os.mkdir``: orchestrator/claim.py), its own
parent run and its own child runs; the MLflow side survives two drivers opening (creating) one
SQLite store and one experiment at the same moment, and a store another process holds locked.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import start_cli
from mlflow.tracking import MlflowClient

from orchestrator.claim import claim_results_dir, results_name
from orchestrator.errors import ConfigError
from orchestrator.tracking.client import _client, open_experiment


def _claim(args: tuple[str, str]) -> str:
    return claim_results_dir(*args)


def test_sweeps_claiming_one_name_at_once_each_get_their_own_directory(tmp_path):
    """Eight processes claim the same ``<name>_<time>``: eight names, each directory made once."""
    storage = str(tmp_path / "results" / "nested")  # made on the way
    base = results_name("twin", time.time())
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        names = pool.map(_claim, [(storage, base)] * 8)
    assert sorted(names) == sorted([base, *(f"{base}-{n}" for n in range(2, 9))])
    assert sorted(os.listdir(storage)) == sorted(names)


def test_an_earlier_sweeps_directory_is_never_reused(tmp_path):
    (tmp_path / "twin_20260101-000000").mkdir()
    (tmp_path / "twin_20260101-000000" / "experiment_state.json").write_text("{}")
    assert claim_results_dir(str(tmp_path), "twin_20260101-000000") == "twin_20260101-000000-2"
    assert os.listdir(tmp_path / "twin_20260101-000000") == ["experiment_state.json"]


def test_remote_storage_gets_a_random_suffix_and_nothing_is_made(tmp_path):
    names = {claim_results_dir("s3://bucket/results", "twin_20260101-000000") for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(r"twin_20260101-000000-[0-9a-f]{6}", n) for n in names)


def test_two_drivers_creating_one_sqlite_store_and_experiment_at_once_share_it(tmp_path):
    """Without the lock, MLflow's migrations run twice on a new file and one driver crashes."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    at = time.time() + 5  # both past their imports, then open at the same instant
    code = (
        "import sys, time; from orchestrator.tracking.client import _client, open_experiment; "
        f"time.sleep(max(0, {at} - time.time())); "
        f"print(open_experiment(_client({uri!r}, 5), {uri!r}, 'twin'))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert {o[0].strip() for o in outs} == {b"1"}
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["twin", "Default"]


def test_a_store_locked_by_another_process_is_waited_for(tmp_path):
    """'database is locked' (a writer holding SQLite's lock past its 5 s timeout) is transient."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri, 5)  # the store exists
    held = threading.Event()

    def hold_lock() -> None:
        con = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(7)
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(10)
    started = time.monotonic()
    try:
        experiment_id = open_experiment(client, uri, "twin")
    finally:
        holder.join()
    assert time.monotonic() - started > 5  # it did wait through one lock timeout
    assert client.get_experiment(experiment_id).name == "twin"


def test_a_deleted_experiment_is_one_line_naming_tracking_experiment(tmp_path):
    """Not restored behind the user's back (the check before Ray starts has its row in
    tests/test_bad_input.py; this is the store's opening, for any store)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri, 5)
    client.delete_experiment(client.create_experiment("twin"))
    with pytest.raises(
        ConfigError, match=r"^tracking.experiment: the MLflow experiment 'twin' \(id 1\) is del"
    ):
        open_experiment(client, uri, "twin")
    assert client.get_experiment("1").lifecycle_stage == "deleted"


def _trial_id(run_name: str) -> str:
    matched = re.fullmatch(r"trial_\d{4}_(\w+)", run_name)
    assert matched, run_name
    return matched.group(1)


@pytest.mark.slow
def test_two_sweeps_started_together_on_one_store_stay_apart(tmp_path):
    """Two ``debug=default`` sweeps, same name, storage and store, started at once: two results
    directories, two parent runs, each with only its own trials."""
    args = ["debug=default", "name=twin", f"storage.path={tmp_path / 'results'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "report=false"]  # fmt: skip
    procs = [start_cli(tmp_path, *args) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]

    dirs = sorted((tmp_path / "results").iterdir())
    assert len(dirs) == 2  # in one second: twin_<time> and twin_<time>-2
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "twin"]
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert len(parents) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    for sweep_dir in dirs:
        record = json.loads((sweep_dir / "orchestrator.json").read_text())
        parent = record["parent_run_id"]
        assert parent in parents and record["experiment"] == sweep_dir.name
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
        assert len(trials) == 4  # debug=default: num_samples=4
        here = " ".join(p.name for p in sweep_dir.iterdir())
        assert all(_trial_id(r.info.run_name) in here for r in trials)
        parents.discard(parent)
        assert f"Ray results: {sweep_dir}" in "".join(outs)
    assert not parents  # each orchestrator.json names a different parent run
    # both drivers opened (one of them created) one Optuna store: a study each
    store = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert sorted(optuna.get_all_study_names(store)) == [d.name for d in dirs]
    assert all(len(optuna.load_study(study_name=d.name, storage=store).trials) == 4 for d in dirs)
    by_id = {r.info.run_id: r for r in runs}
    for run in runs:  # a restart's run sits under a trial run of the same sweep
        parent = by_id.get(run.data.tags.get("mlflow.parentRunId", run.info.run_id))
        assert parent is not None and parent.info.experiment_id == experiment.experiment_id
