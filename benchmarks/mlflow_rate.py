"""How many results per second a local ``mlflow server`` takes when written as the sweep writes them.

``python -m benchmarks.mlflow_rate [--quick] [--results N] [--trials T] [--backend B] [--json PATH]``
starts ``mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db --host 127.0.0.1 --port <free>``
(``--backend postgresql``: over a PostgreSQL started here, :mod:`benchmarks.pgserver`)
(one worker), writes ``N`` results (default 20,000; ``--quick`` 2,000) spread round-robin over
``T`` trial runs (default 32) of one sweep, then stops the server. A result is the 9 values a
built-in trial reports per epoch (``orchestrator.contract.LOGGED_KEYS``); as in a real trial,
``attempt``, ``seed`` and ``params`` keep one value through the run, the others change every
epoch. Writers:

- ``batched``: a plain ``MlflowClient`` batching every value: each run buffers its metric values
  and sends one ``log_batch`` per ``--flush-every`` values (default 200; MLflow allows up to
  1000), flushing the rest when the run ends;
- ``tracker``: the project's ``orchestrator.tracking.SweepTracker`` itself (``start_sweep``,
  ``start_trial``, ``log_metrics``, ``end_trial``, ``end_sweep``), whatever its current writer
  (against a server: up to ``orchestrator.tracking.uri.LANES`` runs written at once; a run's
  constants sent once, ``orchestrator.tracking.runs.unrepeated``);
- ``tracker_serial``: the same tracker writing one request at a time (``lanes=1``), for the ratio;
- ``tracker_changing``: the same tracker with all 9 values changing every epoch (nothing to send
  once per run), for the ratio: what sending a run's constants once saves.

``requests`` is what each writer sent (the tracker's: ``SweepTracker.requests``, a log_batch,
run creation or end each).

Each reports results per second from the first write until everything was flushed (the runs
ended), and checks that the server holds every value (one metric history per run, read back):
``dropped`` must be 0. The store keeps up with a sweep at 1,000 results/s when the rate is above that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.contract import LOGGED_KEYS
from orchestrator.tracking.runs import ONCE_PER_RUN

KEYS = LOGGED_KEYS  # what a sweep logs
FLUSH_EVERY = 200
TARGET_RESULTS_PER_S = 1000.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(
    root: str, *, backend: str | None = None, workers: int = 1, timeout_s: float = 120
) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 backed by ``backend`` (a database URI; default
    SQLite under ``root``), its artifacts under ``root``; yields its URL.

    Started in its own session and stopped (its process group, by id) on exit, even on error.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend or f"sqlite:///{os.path.join(root, 'mlflow.db')}",
        "--artifacts-destination", os.path.join(root, "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    log = open(os.path.join(root, "server.log"), "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}; see {root}/server.log")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"mlflow server did not answer in {timeout_s:.0f} s") from None
                time.sleep(0.3)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _values(i: int, epoch: int, constants: bool = True) -> dict[str, float]:
    """Trial ``i``'s result at ``epoch``: its constants (``ONCE_PER_RUN``) the same every epoch
    (``constants=False``: every value changes)."""
    return {
        key: float(i + k / 10) if constants and key in ONCE_PER_RUN else float(i + epoch / 1000 + k / 10)
        for k, key in enumerate(KEYS)
    }


def _plan(results: int, trials: int) -> list[tuple[int, int]]:
    """(trial, epoch) of each result, round-robin over the trials as concurrent trials report."""
    return [(r % trials, r // trials + 1) for r in range(results)]


def write_batched(url: str, results: int, trials: int, flush_every: int = FLUSH_EVERY) -> dict[str, Any]:
    """``SweepTracker``'s batching, plain client: per run one ``log_batch`` per ``flush_every`` values."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment(f"rate-batched-{time.time_ns()}")
    parent = client.create_run(experiment).info.run_id
    runs = [
        client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id for _ in range(trials)
    ]
    pending: list[list[Metric]] = [[] for _ in range(trials)]
    requests = 0
    start = time.perf_counter()
    for trial, epoch in _plan(results, trials):
        now = int(time.time() * 1000)
        pending[trial].extend(Metric(k, v, now, epoch) for k, v in _values(trial, epoch).items())
        if len(pending[trial]) >= flush_every:
            client.log_batch(runs[trial], metrics=pending[trial])
            pending[trial], requests = [], requests + 1
    for trial, run_id in enumerate(runs):
        if pending[trial]:
            client.log_batch(run_id, metrics=pending[trial])
            requests += 1
        client.set_terminated(run_id)
    elapsed = time.perf_counter() - start
    client.set_terminated(parent)
    return _report(client, runs, results, trials, elapsed, requests)


def write_tracker(
    url: str, results: int, trials: int, lanes: int | None = None, constants: bool = True
) -> dict[str, Any]:
    """The project's ``SweepTracker``: every result through ``log_metrics``; timed until ``end_sweep``.

    ``lanes``: runs written at once (None: the tracker's own choice for the URI); ``constants``:
    a run's constants keep their value (False: every value changes every epoch)."""
    from orchestrator.tracking import SweepTracker

    tracker = SweepTracker(url, f"rate-tracker-{time.time_ns()}", lanes=lanes)
    tracker.start_sweep("rate", {"results": results}, {}, {})
    ids = [f"t{i:04d}" for i in range(trials)]
    for tid in ids:
        tracker.start_trial(tid, tid, {"trial": tid})
    start = time.perf_counter()
    for trial, epoch in _plan(results, trials):
        tracker.log_metrics(ids[trial], _values(trial, epoch, constants), step=epoch)
    for tid in ids:
        tracker.end_trial(tid, "FINISHED")
    tracker.end_sweep("FINISHED")
    elapsed = time.perf_counter() - start
    runs = [tracker.run_ids[t] for t in ids]
    return _report(tracker.client, runs, results, trials, elapsed, tracker.requests)


def _report(
    client: Any, runs: list[str], results: int, trials: int, elapsed: float, requests: int | None
) -> dict[str, Any]:
    stored = sum(len(client.get_metric_history(run_id, "val_acc")) for run_id in runs)
    return {
        "results": results,
        "trials": trials,
        "seconds": elapsed,
        "results_per_s": results / elapsed,
        "values_per_s": results * len(KEYS) / elapsed,
        "requests": requests,
        "dropped": results - stored,
    }


@contextmanager
def _backend(name: str, root: str) -> Iterator[str | None]:
    """The server's store: None (SQLite under ``root``) or a PostgreSQL started for the run."""
    if name == "sqlite":
        yield None
        return
    from benchmarks.pgserver import postgres_server

    with postgres_server(tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp")) as uri:
        yield uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mlflow_rate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2,000 results")
    parser.add_argument("--results", type=int, default=None, help="default 20000 (2000 with --quick)")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument(
        "--writers",
        default="batched,tracker",
        help="comma-separated: batched, tracker, tracker_serial, tracker_changing",
    )
    parser.add_argument("--flush-every", type=int, default=FLUSH_EVERY, help="batched: values per log_batch")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql"), default="sqlite",
        help="the server's store: SQLite, or a PostgreSQL started here (benchmarks/pgserver.py)",
    )  # fmt: skip
    parser.add_argument("--server-workers", type=int, default=1, help="the server's worker processes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.flush_every <= 1000:
        parser.error(
            f"--flush-every: must be in [1, 1000] (MLflow's log_batch limit), got {args.flush_every}"
        )
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    results = args.results or (2000 if args.quick else 20_000)
    writers = {
        "batched": lambda url, n, t: write_batched(url, n, t, args.flush_every),
        "tracker": write_tracker,
        "tracker_serial": lambda url, n, t: write_tracker(url, n, t, lanes=1),
        "tracker_changing": lambda url, n, t: write_tracker(url, n, t, constants=False),
    }
    wanted = [w for w in args.writers.split(",") if w]
    if any(w not in writers for w in wanted):
        parser.error(f"--writers: choose from {', '.join(writers)}")
    root = tempfile.mkdtemp(prefix="bench-mlflow-rate-")
    load = os.getloadavg()
    out: dict[str, Any] = {}
    try:
        with (
            _backend(args.backend, root) as backend,
            mlflow_server(root, backend=backend, workers=args.server_workers) as url,
        ):
            for name in wanted:
                out[name] = writers[name](url, results, args.trials)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc = {
        **out,
        "flush_every": args.flush_every,
        "backend": args.backend,
        "server_workers": args.server_workers,
        "target_results_per_s": TARGET_RESULTS_PER_S,
        "settings": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load,
            "loadavg_after": os.getloadavg(),
        },
    }
    print(f"{'writer':16}{'results':>10}{'seconds':>10}{'results/s':>12}{'requests':>10}{'dropped':>9}")
    for name, r in out.items():
        req = "-" if r["requests"] is None else str(r["requests"])
        print(
            f"{name:16}{r['results']:>10}{r['seconds']:>10.2f}{r['results_per_s']:>12.0f}{req:>10}{r['dropped']:>9}"
        )
        verdict = "met" if r["results_per_s"] >= TARGET_RESULTS_PER_S and r["dropped"] == 0 else "MISSED"
        print(f"  target >= {TARGET_RESULTS_PER_S:.0f} results/s, nothing dropped: {verdict}")
    print(f"backend {args.backend}; load average {load} -> {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0 if all(r["dropped"] == 0 for r in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
