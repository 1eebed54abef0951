"""MLflow on a real PostgreSQL: a sweep recording into it directly and through an
``mlflow server`` over it; a database that cannot be reached or a driver that is missing is one
line before Ray starts. The sweep's Optuna study goes into a PostgreSQL database too.

The server is a real PostgreSQL started on 127.0.0.1 for this module (benchmarks/pgserver.py;
``.ci/run`` installs Debian's ``postgresql`` where it is missing) and stopped at the end.
"""

from __future__ import annotations

import importlib.util
import tempfile

import optuna
import pytest
from conftest import cli, run_cli
from mlflow.tracking import MlflowClient

from benchmarks import pgserver
from benchmarks.mlflow_rate import free_port, mlflow_server
from orchestrator.errors import ConfigError
from orchestrator.tracking.database import check_database

needs_postgres = pytest.mark.skipif(
    not pgserver.available() or importlib.util.find_spec("psycopg") is None,
    reason="PostgreSQL or its driver (the [postgres] extra) is not installed",
)


@pytest.fixture(scope="module")
def postgres():
    with pgserver.postgres_server(tempfile.mkdtemp(prefix="pg-", dir="/tmp")) as uri:
        yield uri


def _sweep(tmp_path, uri: str) -> list[str]:
    return [
        "debug=default",
        "num_samples=3",
        "report=false",
        "verbose=0",
        f"storage.path={tmp_path / 'results'}",
        f"tracking.uri={uri}",
    ]


def _assert_recorded(uri: str, trials: int) -> None:
    """One parent and ``trials`` finished child runs with per-epoch val_acc from step 1."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == trials, [r.data.tags for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps and steps == list(range(1, len(steps) + 1))


@needs_postgres
@pytest.mark.slow
def test_a_sweep_records_into_postgresql(postgres, tmp_path):
    """MLflow's record, and the Optuna study in a database of its own (search.storage)."""
    pgserver.create_database(postgres, "optuna")
    studies = postgres.rsplit("/", 1)[0] + "/optuna"
    out = run_cli(tmp_path, *_sweep(tmp_path, postgres), f"search.storage={studies}")
    assert "finished in" in out and "postgresql://" in out, out
    _assert_recorded(postgres, 3)
    (name,) = optuna.get_all_study_names(studies)
    assert f"Optuna study: {name} in {studies}" in out and f"optuna-dashboard {studies}" in out
    trials = optuna.load_study(study_name=name, storage=studies).trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)


@needs_postgres
@pytest.mark.slow
def test_a_sweep_records_through_an_mlflow_server_on_postgresql(postgres, tmp_path):
    database = postgres.rsplit("/", 1)[0] + "/server"
    pgserver.create_database(postgres, "server")
    with mlflow_server(str(tmp_path), backend=database) as url:
        run_cli(tmp_path, *_sweep(tmp_path, url))
        _assert_recorded(url, 3)
    _assert_recorded(database, 3)  # the server wrote it into PostgreSQL


@needs_postgres
def test_a_database_that_does_not_answer_is_one_line_before_anything_starts(tmp_path):
    uri = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/mlflow"
    proc = cli(tmp_path, *_sweep(tmp_path, uri))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: tracking.uri: cannot connect to postgresql://postgres:***@127.0.0.1:"), (
        line
    )
    assert "hunter2" not in line
    assert not (tmp_path / "results").exists()


def test_a_missing_database_driver_is_named_with_what_to_install():
    with pytest.raises(ConfigError, match=r"tracking.uri: the mysql driver 'MySQLdb' is not installed"):
        check_database("mysql://u:pw@127.0.0.1:3306/db")
