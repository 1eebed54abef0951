"""The MLflow record survives its tracking server going away: retried in order, spooled, replayed.

Real `mlflow server` processes on 127.0.0.1 (SQLite store), killed with SIGKILL and restarted
on the same port and store; every check reads the store back through `MlflowClient`.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import pytest
from conftest import cli_env
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestrator.tracking import GRACE_ENV, SweepTracker
from orchestrator.tracking.deliver import _Deliverer
from orchestrator.tracking.ops import _Op

KEYS = ("val_acc", "val_loss")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1:port with a SQLite store; its process group is killed on stop."""

    def __init__(self, root) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # uvicorn and the job runner are children: kill the group
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.kill()
        pytest.fail("mlflow server did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None
        deadline = time.time() + 30  # the port is free again before a restart binds it
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def _wait_for(condition, what: str, limit: float = 120.0) -> None:
    deadline = time.time() + limit
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _check_record(
    client: MlflowClient, experiment: str, steps: dict[str, list[int]], attempts: dict[str, int]
):
    """One parent; per trial a child under it with every step once; per restart a nested run under its
    trial's run; no run left RUNNING. Returns the runs by name."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    by_name = {r.info.run_name: r for r in runs}
    assert len(by_name) == len(runs)  # no run created twice
    for name, expected in steps.items():
        run = by_name[name]
        want_parent = parent.info.run_id
        if name in attempts:
            want_parent = by_name[name.split(" attempt")[0]].info.run_id
        assert run.data.tags["mlflow.parentRunId"] == want_parent
        for key in KEYS:
            logged = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert logged == Counter(expected), (name, key)
    assert len(runs) == 1 + len(steps)
    return by_name


def _log(tracker: SweepTracker, trials: list[str], steps, attempt: int = 0) -> None:
    for step in steps:
        for tid in trials:
            tracker.log_metrics(tid, {"val_acc": step / 100, "val_loss": 1.0 / step}, step, attempt=attempt)


@pytest.mark.slow
def test_server_killed_and_restarted_mid_sweep_every_step_arrives_once(server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="orchestrator.tracking")
    tracker = SweepTracker(
        server.url,
        "outage",
        spool_dir=str(tmp_path / "spool"),
        timeout_s=5,
        interval_s=0.05,
        outage_grace_s=300,
    )
    tracker.start_sweep("outage", {"num_samples": 3}, {"sweep": "outage"}, {"config.yaml": "a: 1\n"})
    trials = ["t0", "t1", "t2"]
    for tid in trials:
        tracker.start_trial(tid, f"trial_{tid}", {"lr": 0.1, "depth": 2})
    assert tracker.flush()
    parent_id = tracker.parent_run_id

    # kill the server from another thread while the driver keeps logging and the writer sends
    killed = threading.Event()
    delivered = tracker._writer.delivered

    def kill_when_busy() -> None:
        _wait_for(lambda: tracker._writer.delivered >= delivered + 5, "deliveries before the kill")
        server.kill()
        killed.set()

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    step = 0
    while not killed.is_set() or step < 60:
        step += 1
        _log(tracker, trials, [step])
        time.sleep(0.01)
    killer.join()
    _wait_for(lambda: tracker._writer.outage_since is not None, "the writer to notice the outage")
    tracker.start_attempt("t1", 1, "trial_t1 attempt 1", {"seed": "7", "restart_reason": "stuck"})
    _log(tracker, ["t1"], range(1, 11), attempt=1)
    tracker.end_trial("t0", "FINISHED", {"final_status": "COMPLETED"})
    server.start()  # same port, same store
    _log(tracker, ["t1", "t2"], range(step + 1, step + 21))
    for tid in ("t1", "t2"):
        tracker.end_trial(tid, "FINISHED", {"final_status": "COMPLETED"})
    tracker.end_sweep("FINISHED", {"final_status": "FINISHED"}, {"best_value": 0.9})

    assert not os.path.exists(tracker.spool_path)  # everything was delivered, nothing spooled
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and server.url in warnings[0] and "will retry" in warnings[0]
    steps = {
        "trial_t0": list(range(1, step + 1)),
        "trial_t1": list(range(1, step + 21)),
        "trial_t2": list(range(1, step + 21)),
        "trial_t1 attempt 1": list(range(1, 11)),
    }
    runs = _check_record(MlflowClient(server.url), "outage", steps, {"trial_t1 attempt 1": 1})
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    parent = runs["outage"]
    assert parent.info.run_id == parent_id
    assert parent.data.metrics["mlflow_results_logged"] == tracker.results_logged
    assert parent.data.metrics["mlflow_driver_ms_per_result"] > 0


@pytest.mark.slow
def test_server_down_at_the_end_spools_and_replay_delivers_without_duplicates(server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="orchestrator.tracking")
    spool_dir = tmp_path / "spool"
    tracker = SweepTracker(server.url, "spooled", spool_dir=str(spool_dir), timeout_s=5, outage_grace_s=1)
    tracker.start_sweep("spooled", {"num_samples": 2}, {"sweep": "spooled"}, {"config.yaml": "a: 1\n"})
    trials = ["t0", "t1"]
    for tid in trials:
        tracker.start_trial(tid, f"trial_{tid}", {"lr": 0.1})
    _log(tracker, trials, range(1, 6))
    assert tracker.flush()  # these five steps are in the store before it goes away
    server.kill()
    _log(tracker, trials, range(6, 11))
    tracker.start_trial("t2", "trial_t2", {"lr": 0.2})  # created while the server is down
    _log(tracker, ["t2"], range(1, 11))
    tracker.end_trial("t0", "FINISHED", {"final_status": "COMPLETED"})
    tracker.end_sweep("FINISHED", {"final_status": "FINISHED"})

    spool = tracker.spool_path
    assert os.path.isfile(spool) and os.path.dirname(spool) == str(spool_dir)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert f"python -m orchestrator.tracking replay {spool}" in said

    server.start()
    replay = [sys.executable, "-m", "orchestrator.tracking", "replay", spool]
    first = subprocess.run(replay, capture_output=True, text=True, timeout=120, env=cli_env())
    assert first.returncode == 0, first.stderr[-2000:]
    # a replay that lost its progress file (as if it died after delivering) duplicates nothing
    os.remove(spool + ".done")
    again = subprocess.run(replay, capture_output=True, text=True, timeout=120, env=cli_env())
    assert again.returncode == 0, again.stderr[-2000:]

    client = MlflowClient(server.url)
    steps = {"trial_t0": list(range(1, 11)), "trial_t1": list(range(1, 11)), "trial_t2": list(range(1, 11))}
    runs = _check_record(client, "spooled", steps, {})
    assert runs["spooled"].data.tags["final_status"] == "FINISHED"
    assert runs["spooled"].info.status == runs["trial_t0"].info.status == "FINISHED"
    for name in ("trial_t1", "trial_t2"):  # left open: ended by end_sweep, delivered by the replay
        assert runs[name].info.status == "KILLED" and runs[name].data.tags["final_status"] == "INTERRUPTED"
    assert runs["trial_t2"].data.params["lr"] == "0.2"


def test_a_retried_batch_skips_the_metrics_already_logged(tmp_path):
    """The idempotence rule on its own (SQLite store): a batch that may have reached the store is
    compared with the run's history before it is sent again."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("dedupe")
    run_id = client.create_run(exp).info.run_id
    metrics = [["val_acc", 0.1 * s, 1000 + s, s] for s in range(1, 6)]
    client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in metrics[:3]])
    deliverer = _Deliverer(client, exp, {"h": run_id})
    deliverer.deliver(_Op("batch", "h", {"metrics": metrics}, uncertain=True))
    deliverer.deliver(_Op("batch", "h", {"metrics": metrics}, uncertain=True))
    history = client.get_metric_history(run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]


def test_the_driver_only_enqueues(tmp_path):
    """Logging a result costs the driver no store call: a tracker whose store is SQLite keeps
    every step and its timer counts each call."""
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "cost", interval_s=0.2)
    tracker.start_sweep("cost", {}, {}, {})
    tracker.start_trial("t", "trial_t", {"lr": 0.1})
    _log(tracker, ["t"], range(1, 2501))  # 5000 values: several log_batch calls of <= 1000
    tracker.end_sweep("FINISHED")
    assert tracker.results_logged == 2500 and tracker.driver_seconds > 0
    client = MlflowClient(tracker.uri)
    run_id = tracker.run_ids["t"]
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_acc")) == list(range(1, 2501))
    assert client.get_run(run_id).info.status == "KILLED"  # end_sweep ended the open trial


@pytest.mark.slow
def test_a_sweep_survives_its_tracking_server_going_away(server, tmp_path):
    """The real command line: the server is killed while trials report and restarted on the same
    port and store; the sweep exits 0 with one warning and its record is complete."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "debug=default",
            "trainable.epochs=8",
            "verbose=0",
            f"tracking.uri={server.url}",
            "tracking.experiment=outage_e2e",
            "tracking.log_model=false",
        ],
        cwd=tmp_path,
        env=cli_env(**{GRACE_ENV: "600"}),  # the end of the sweep waits for the server, however slow
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        client = MlflowClient(server.url)

        def an_epoch_recorded() -> bool:
            exp = client.get_experiment_by_name("outage_e2e")
            if exp is None:
                return False
            return any("val_acc" in r.data.metrics for r in client.search_runs([exp.experiment_id]))

        _wait_for(lambda: proc.poll() is None and an_epoch_recorded(), "a trial's first epoch", 240)
        server.kill()
        _wait_for(lambda: any("unreachable" in ln for ln in lines) or proc.poll() is not None, "the warning")
        server.start()
        assert proc.wait(timeout=400) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    out = "".join(lines)
    (tmp_path / "sweep.log").write_text(out)  # for a look after a failure
    assert out.count(f"MLflow at {server.url} unreachable") == 1, out[-3000:]
    assert f"MLflow at {server.url} reachable again" in out and "replay" not in out  # retried, not spooled

    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name("outage_e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert all(r.info.status != "RUNNING" for r in runs)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 4  # debug=default: every configured trial is a child run
    trial_ids = {r.info.run_id for r in trials}
    for run in runs:
        if run is parent:
            continue
        if run.info.run_id not in trial_ids:  # a restart: nested under its trial's run
            assert run.data.tags["mlflow.parentRunId"] in trial_ids
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, "val_acc"))
        assert set(steps.values()) == {1} and sorted(steps) == list(range(1, len(steps) + 1)), (
            run.info.run_name
        )
        if run.info.run_id in trial_ids and run.data.tags["attempts"] == "1":  # every epoch it trained
            assert len(steps) == int(run.data.tags["epochs_run"]), run.info.run_name
