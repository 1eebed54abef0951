"""cluster=ray: joining a real Ray cluster, refusing an unreachable one, Ray Jobs and Ray Client.

The slow tests start a two-node cluster on 127.0.0.1 with ``ray start`` (a head with the
dashboard, which serves the Jobs API, and a Ray Client server, and one worker; 1 CPU each;
token authentication on), each node in a private temp dir so no other Ray on the machine is
touched, and stop it at the end by killing the process groups they started.
"""

import glob
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
from conftest import cli_env
from mlflow.tracking import MlflowClient

from orchestrator.config import load_config
from orchestrator.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
_HPARAMS = {"hparams": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _orchestrator(cwd, *args, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _wait_for(log_path, text, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited {proc.returncode}: {open(log_path).read()[-2000:]}")
        if text in open(log_path).read():
            return
        time.sleep(0.5)
    raise TimeoutError(f"no {text!r} in {log_path} after {timeout}s")


def _stop(proc):
    """Stop a ``ray start --block`` and every process of its group (its session)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a worker node on 127.0.0.1 (1 CPU each); yields (GCS address, dashboard URL, env,
    Ray Client address)."""
    env = cli_env(RAY_AUTH_MODE="token")  # a cluster joined by address uses ~/.ray/auth_token
    root = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard, client = _free_port(), _free_port(), _free_port()
    common = ["start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    procs = []
    # the head reads the token and never makes one: make it when this machine has none yet
    token = [RAY, "get-auth-token", "--generate"]
    subprocess.run(token, env=env, capture_output=True, check=True, timeout=60)

    def start(name, *args):
        log = os.path.join(root, f"{name}.log")
        temp = os.path.join(root, name)
        cmd = [RAY, *common, f"--temp-dir={temp}", f"--dashboard-agent-listen-port={_free_port()}", *args]
        proc = subprocess.Popen(
            cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        _wait_for(log, "Ray runtime started", proc)

    try:
        start(
            "head",
            "--head",
            f"--port={gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
        )
        start("worker", f"--address=127.0.0.1:{gcs}")
        yield f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env, f"ray://127.0.0.1:{client}"
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _mlflow_runs(db):
    client = MlflowClient(f"sqlite:///{db}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_a_sweep_submitted_as_a_ray_job_runs_on_the_cluster(ray_cluster, tmp_path):
    """``ray job submit --working-dir . -- python -m orchestrator cluster=ray ...`` (the README's line)."""
    _, dashboard, env, _ = ray_cluster
    results, db = tmp_path / "results", tmp_path / "mlflow.db"
    entry = ["python", "-m", "orchestrator", "cluster=ray", *_small_sweep(results, db)]
    job_env = {**env, "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")}
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".", "--", *entry],
        cwd=ROOT,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "trials by final status:" in out

    _assert_complete_record(results, db)


def _small_sweep(results, db) -> list[str]:
    """The overrides of a 2-trial, 3-epoch sweep recording into ``results`` and the SQLite ``db``."""
    return [
        "debug=default",
        "num_samples=2",
        "report=false",
        "tracking.log_model=false",
        "verbose=0",
        f"storage.path={results}",
        f"tracking.uri=sqlite:///{db}",
    ]


def _assert_complete_record(results, db) -> tuple[str, list]:
    """A finished 2-trial sweep: its result dirs and record, and in MLflow a parent run and one
    child per trial, all FINISHED, each child with per-epoch steps 1..epochs_run. Returns (sweep
    dir, child runs)."""
    (sweep_dir,) = glob.glob(str(results / "*"))
    trial_dirs = glob.glob(os.path.join(sweep_dir, "trial_*"))
    assert len(trial_dirs) == 2 and all(os.path.exists(os.path.join(d, "result.json")) for d in trial_dirs)
    assert os.path.exists(os.path.join(sweep_dir, "orchestrator.json"))
    client, runs = _mlflow_runs(db)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.data.tags["final_status"] == "FINISHED"
    for run in children:
        epochs = int(run.data.tags["epochs_run"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == list(range(1, epochs + 1))
    return sweep_dir, children


@pytest.mark.slow
def test_a_sweep_over_ray_client_runs_on_the_cluster(ray_cluster, tmp_path):
    """``cluster.address=ray://...``: the Tuner runs in a task on the head; the record is complete,
    the trials' runs carry the convergence verdicts (callbacks and scheduler stayed one set of
    objects there) and the summary names the best trial's run. Resuming over ray:// is refused."""
    _, _, env, client_address = ray_cluster
    results, db = tmp_path / "results", tmp_path / "mlflow.db"
    proc = _orchestrator(
        tmp_path,
        "cluster=ray",
        f"cluster.address={client_address}",
        *_small_sweep(results, db),
        env=env,
        timeout=420,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "finished in" in proc.stdout and "2 trials" in proc.stdout, proc.stdout
    assert "INTERRUPTED" not in proc.stdout
    sweep_dir, children = _assert_complete_record(results, db)
    assert all(run.data.tags.get("verdict") and run.data.tags.get("lineage") for run in children)
    best_run = proc.stdout.split("best trial run ")[1].split(")")[0]
    assert best_run in {run.info.run_id for run in children}
    # the searcher asked and told the study from the head: its store beside mlflow.db
    study = optuna.load_study(
        study_name=os.path.basename(sweep_dir), storage=f"sqlite:///{tmp_path / 'optuna.db'}"
    )
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)

    resumed = _orchestrator(tmp_path, f"resume={sweep_dir}", env=env, timeout=120)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert resumed.stderr.strip().splitlines()[-1] == (
        "error: resume: not over a ray:// client connection; submit the resume as a Ray job"
    )


USER_TRAIN = """
import torch
from torch import nn

def train(hp, trial):
    torch.manual_seed(trial.seed)
    x = torch.randn(64, 4)
    y = x.sum(dim=1, keepdim=True)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=hp["lr"])
    trial.watch(model, opt)
    for epoch in range(1, trial.epochs + 1):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        in_copy = float("runtime_resources" in __file__)  # imported from Ray's copy of the launch dir
        trial.report(epoch, val_loss=loss.item(), in_copy=in_copy)
"""


@pytest.mark.slow
def test_a_users_function_is_shipped_to_the_cluster(ray_cluster, tmp_path):
    """cluster=ray with trainable=function: the launch directory travels to the nodes as the
    trials' working directory, and the trials import the user's module from that copy."""
    address, _, env, _ = ray_cluster
    work = tmp_path / "user"
    (work / "userpkg").mkdir(parents=True)
    (work / "userpkg" / "__init__.py").write_text("")
    (work / "userpkg" / "train.py").write_text(USER_TRAIN)
    results, db = tmp_path / "results", tmp_path / "mlflow.db"
    own = ["trainable=function", "trainable.fn=userpkg.train:train", "metric=val_loss", "trainable.epochs=3"]
    proc = _orchestrator(
        work,
        "cluster=ray",
        f"cluster.address={address}",
        *own,
        *_small_sweep(results, db),
        "+trainable.hparams.lr={type:loguniform,low:1e-3,high:1e-1}",
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    _, children = _assert_complete_record(results, db)
    assert all(run.data.metrics["in_copy"] == 1.0 for run in children)


def test_a_pickled_tracker_records_under_the_drivers_parent_run(tmp_path):
    """What a ray:// sweep relies on: a pickled SweepTracker opens nothing until it logs, records
    its trials under the driver's parent run, delivers everything in ``end_copy`` (or at exit; a
    trial left open ends KILLED) and never ends the parent run; the driver adopts its run ids and
    ends the parent run."""
    from orchestrator.tracking import SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "x")
    tracker.start_sweep("x", {"num_samples": 2}, {}, {})
    parent = tracker.parent_run_id
    copy = pickle.loads(pickle.dumps(tracker))
    assert copy._live_writer is None and copy.client is None
    copy.start_trial("t1", "trial_t1", {"lr": 0.1})
    for step in (1, 2):
        copy.log_metrics("t1", {"val_loss": 1.0 / step}, step=step)
    copy.end_trial("t1", "FINISHED", {"final_status": "COMPLETED"})
    copy.start_trial("t2", "trial_t2", {"lr": 0.2})
    copy.end_copy()
    back = pickle.loads(pickle.dumps(copy))  # what the driver gets back from the cluster
    lost = pickle.loads(pickle.dumps(tracker))  # a copy whose process exits without end_copy
    lost.start_trial("t3", "trial_t3", {"lr": 0.3})
    lost._at_exit()
    store = MlflowClient(uri)
    assert store.get_run(parent).info.status == "RUNNING"

    tracker.adopt(back)
    t1 = tracker.run_ids["t1"]
    tracker.end_sweep("FINISHED", {"final_status": "FINISHED"})
    runs = {r.info.run_name: r for r in store.search_runs([tracker.experiment_id])}
    assert {name: r.info.status for name, r in runs.items()} == {
        "x": "FINISHED",
        "trial_t1": "FINISHED",
        "trial_t2": "KILLED",
        "trial_t3": "KILLED",
    }
    assert runs["x"].info.run_id == parent and runs["trial_t1"].info.run_id == t1
    assert all(runs[f"trial_t{i}"].data.tags["mlflow.parentRunId"] == parent for i in (1, 2, 3))
    assert [m.step for m in store.get_metric_history(t1, "val_loss")] == [1, 2]


@pytest.mark.slow
def test_joining_the_cluster_refuses_a_trial_no_node_can_hold(ray_cluster, tmp_path):
    """Two 1-CPU nodes: 2 CPUs in all, but a 2-CPU trial fits on neither (it would wait forever)."""
    address, _, env, _ = ray_cluster
    args = ["cluster=ray", f"cluster.address={address}", "debug=default", "resources.cpus_per_trial=2"]
    refused = _orchestrator(tmp_path, *args, env=env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert lines[-1] == "error: resources.cpus_per_trial: 2 but its largest node has 1 CPUs"
    assert sorted(os.listdir(tmp_path)) == []  # no results directory, no MLflow store


@pytest.mark.parametrize(
    ("cpus", "gpus", "nodes", "slots"),
    [
        (1, 0, [{"CPU": 16, "GPU": 0}], 16),
        (2, 0, [{"CPU": 16, "GPU": 0}, {"CPU": 5, "GPU": 0}], 10),
        (1, 0.25, [{"CPU": 16, "GPU": 1}], 4),  # four trials share one GPU
        (1, 0.25, [{"CPU": 2, "GPU": 1}], 2),  # CPUs bound it
        (1, 0.3, [{"CPU": 16, "GPU": 2}], 6),
        (4, 2, [{"CPU": 32, "GPU": 8}, {"CPU": 32, "GPU": 4}], 6),  # two whole GPUs each
        (1, 1, [{"CPU": 8, "GPU": 0}, {"CPU": 8, "GPU": 1}], 1),
    ],
)
def test_how_many_trials_run_at_once(cpus, gpus, nodes, slots):
    from orchestrator.cluster import check_resources

    cfg = load_config(
        {"name": "x", "resources": {"cpus_per_trial": cpus, "gpus_per_trial": gpus}, "trainable": _HPARAMS}
    )
    assert check_resources(cfg, nodes) == slots


@pytest.mark.parametrize(
    ("cpus", "gpus", "nodes", "message"),
    [
        (4, 0, [{"CPU": 2, "GPU": 0}], "resources.cpus_per_trial: 4 but the cluster has 2 CPUs"),
        (1, 2, [{"CPU": 8, "GPU": 1}] * 2, "resources.gpus_per_trial: 2 but its largest node has 1 GPUs"),
        (4, 1, [{"CPU": 8, "GPU": 0}, {"CPU": 2, "GPU": 1}], "resources: no node has both 4 CPUs and 1 GPUs"),
    ],
)
def test_a_trial_no_node_can_hold_is_refused(cpus, gpus, nodes, message):
    from orchestrator.cluster import check_resources

    cfg = load_config(
        {"name": "x", "resources": {"cpus_per_trial": cpus, "gpus_per_trial": gpus}, "trainable": _HPARAMS}
    )
    with pytest.raises(ConfigError) as info:
        check_resources(cfg, nodes)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_cluster_address_is_one_line_and_exit_2(tmp_path, scheme):
    port = _free_port()  # nothing listens there
    proc = _orchestrator(
        tmp_path,
        "cluster=ray",
        f"cluster.address={scheme}127.0.0.1:{port}",
        "cluster.connect_timeout_s=2",
        "debug=default",
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: cluster.address: cannot reach the Ray cluster at '{scheme}127.0.0.1:{port}'"
    )
    assert os.listdir(tmp_path) == []  # the subprocess timeout bounds the wait: Ray alone retries for minutes


def test_ray_address_from_the_environment_is_named_in_the_error(tmp_path):
    port = _free_port()
    proc = _orchestrator(
        tmp_path,
        "cluster=ray",
        "cluster.connect_timeout_s=1",
        "debug=default",
        env=cli_env(RAY_ADDRESS=f"127.0.0.1:{port}"),
        timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: cluster.address (from $RAY_ADDRESS): cannot reach")


def test_a_malformed_cluster_address_is_refused(tmp_path):
    proc = _orchestrator(tmp_path, "cluster=ray", "cluster.address=nohost", "debug=default", env=cli_env())
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: cluster.address: expected auto, <host>:<port> or ray://<host>:<port>")


def test_why_joining_failed_is_one_line_with_the_heads_reason():
    from orchestrator.cluster import join_failure

    traceback_text = (
        "Initialization failure from server:\nTraceback (most recent call last):\n"
        '  File "proxier.py", line 765, in Datapath\n'
        "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`\n"
    )
    reason = join_failure(ConnectionAbortedError(traceback_text), "ray://10.0.0.1:10001")
    assert reason == (
        "Initialization failure from server: "
        "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`"
    )
    timeout = join_failure(ConnectionError("ray client connection timeout"), "ray://10.0.0.1:80")
    assert timeout.endswith("Ray Client port (`ray start --ray-client-server-port`, 10001)?")
    assert "RAY_AUTH_MODE=token" in join_failure(RuntimeError("Authentication failed\nmore"), "10.0.0.1:6379")
    assert join_failure(RuntimeError(""), "10.0.0.1:6379") == "RuntimeError"
