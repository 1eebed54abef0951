"""The sweep records to a real `mlflow server` on loopback, by config and by environment variable."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import cli_env, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1, stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _sweep(cwd, env_extra, *args):
    return run_cli(cwd, "debug=default", "num_samples=2", "search=random", *args, env=cli_env(**env_extra))


def _check(url, experiment):
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) >= 3
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == list(range(1, len(steps) + 1))
    assert "config.yaml" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}


def test_tracking_uri_from_the_config(server, tmp_path):
    out = _sweep(tmp_path, {}, f"tracking.uri={server}", "tracking.experiment=by_config")
    assert f"{server}/#/experiments/" in out
    _check(server, "by_config")
    assert not (tmp_path / "mlflow.db").exists()


def test_tracking_uri_from_the_environment(server, tmp_path):
    _sweep(tmp_path, {"MLFLOW_TRACKING_URI": server}, "tracking.experiment=by_env")
    _check(server, "by_env")
    assert not (tmp_path / "mlflow.db").exists()
