"""What the orchestrator costs: one real sweep run three ways, measured from outside.

``python -m benchmarks.overhead [--quick] [--json PATH] [--trials N --epochs E]`` runs, one
after the other, the same sweep (digits, the default MLP with fixed hyperparameters so every
trial does the same work, FIFO, 2 trials at a time; default 32 trials x 20 epochs, ``--quick``
8 x 5) as

- ``ours``: ``python -m orchestrator scheduler=fifo ...`` with its defaults (MLflow on, the best
  model logged);
- ``plain_ray``: Ray Tune as its documentation teaches (``benchmarks.overhead_runs plain_ray``:
  Tuner + OptunaSearch + MLflowLoggerCallback, Ray's defaults);
- ``floor``: the same training in a plain loop in 2 processes (``benchmarks.overhead_runs floor``).

Each is a subprocess in a fresh temporary directory. The benchmark polls the process tree with
psutil (driver peak RSS, total peak RSS: the sum over the driver and all its descendants, Ray's
own processes and workers included; shared pages count in every process). A measurement hook
(``benchmarks/perf_hook/sitecustomize.py``, put on ``PYTHONPATH``) records, without editing the
project, the time of every ``Trainer.train_epoch`` call (the training work: ``efficiency`` =
its sum / (wall x 2 slots)), when the driver first handed a result to Tune's callbacks
(``first_result_s``, from the command's start; the floor: its first epoch's end) and the
driver's time inside the MLflow callback and tracker (``mlflow_ms_per_result``: all of it,
sweep start and end and the end-of-sweep plots included, over the results).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOOK_DIR = Path(__file__).resolve().parent / "perf_hook"
SLOTS = 2
MIB = 1024 * 1024
#: Targets of issue 6 for ``ours``.
TARGETS = {
    "efficiency": 0.90,
    "wall_vs_plain_ray": 0.6,
    "wall_vs_floor": 1.15,
    "driver_peak_rss_mib": 350.0,
    "first_result_s": 6.0,
    "mlflow_ms_per_result": 2.0,
}
OURS_TIMED = (
    "orchestrator.callbacks:MlflowTrialCallback;orchestrator.tracking.tracker:SweepTracker;"
    "orchestrator.tracking.opening:StoreOpening"  # the wait for a store opened while Ray starts
)
PLAIN_TIMED = "ray.air.integrations.mlflow:MLflowLoggerCallback"
#: Driver phases timed in every variant (where they run): start-up, the Tuner, the end of a sweep.
PHASES = ";".join(
    [
        "orchestrator.cluster:start_ray",
        "orchestrator.exporting:export_best",
        "orchestrator.summary:summarize",
        "orchestrator.reporting:finish_report",
        "orchestrator.tracking.tracker:SweepTracker.start_sweep",
        "orchestrator.tracking.tracker:SweepTracker.end_sweep",
        "ray.tune.tuner:Tuner.fit",
        "ray._private.worker:shutdown",
        "ray._private.worker:init",
    ]
)


def _psutil() -> Any:
    """psutil, from Ray's bundled copy when it is not installed on its own."""
    try:
        import psutil
    except ImportError:
        spec = importlib.util.find_spec("ray")
        if spec is None or not spec.submodule_search_locations:
            raise
        sys.path.append(os.path.join(list(spec.submodule_search_locations)[0], "thirdparty_files"))
        import psutil
    return psutil


@dataclass
class Run:
    """One measured command: the per-run keys of the JSON, plus what they were computed from."""

    wall_s: float
    efficiency: float
    driver_peak_rss_mib: float
    total_peak_rss_mib: float
    driver_peak_at_s: float
    first_result_s: float | None
    mlflow_ms_per_result: float | None
    training_s: float
    epochs: int
    results: int | None
    mlflow_s: float | None
    phases_s: dict[str, float]
    mlflow_s_by_method: dict[str, float]
    returncode: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def ours_command(trials: int, epochs: int) -> list[str]:
    """``python -m orchestrator`` with FIFO, 2 at a time and the fixed MLP (only lr searched, narrowly)."""
    from benchmarks.overhead_runs import FIXED, LR_HIGH, LR_LOW

    fixed = [
        f"trainable.hparams.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in FIXED.items()
    ]
    return [
        sys.executable,
        "-m",
        "orchestrator",
        "name=overhead",
        "scheduler=fifo",
        f"num_samples={trials}",
        "max_concurrent_trials=2",
        f"trainable.epochs={epochs}",
        f"trainable.hparams.lr.low={LR_LOW}",
        f"trainable.hparams.lr.high={LR_HIGH}",
        *fixed,
    ]


def runs_command(variant: str, trials: int, epochs: int) -> list[str]:
    """``python -m benchmarks.overhead_runs VARIANT``: the plain Ray Tune script or the floor."""
    args = ["--trials", str(trials), "--epochs", str(epochs), "--workers", str(SLOTS), "--dir", "."]
    return [sys.executable, "-m", "benchmarks.overhead_runs", variant, *args]


def _env(timing_dir: str, timed: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    path = [str(HOOK_DIR), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env["BENCH_TIMING_DIR"] = timing_dir
    env["BENCH_TIME_CLASSES"] = timed
    env["BENCH_PHASES"] = PHASES
    return env


def read_records(timing_dir: str) -> list[dict[str, Any]]:
    """Every JSON line the hook wrote, from every process."""
    records = []
    for path in sorted(Path(timing_dir).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def summarize(
    records: list[dict[str, Any]], started: float, wall: float, slots: int = SLOTS
) -> dict[str, Any]:
    """Training time, efficiency, first result and MLflow time from the hook's records.

    ``first_result_s``: the driver's first result handed to Tune's callbacks, else (no Tune) the
    first epoch's end; from ``started`` (wall clock). ``mlflow_ms_per_result`` is None without
    timed classes or results.
    """
    epochs = [r for r in records if r["k"] == "epoch"]
    training = sum(r["s"] for r in epochs)
    firsts = [r["t"] for r in records if r["k"] == "first_result"]
    if not firsts and epochs:
        firsts = [min(r["t1"] for r in epochs)]
    results = sum(r["n"] for r in records if r["k"] == "results") or None
    timed = [r for r in records if r["k"] == "timed"]
    mlflow_s = sum(r["s"] for r in timed) if timed else None
    per_result = 1000.0 * mlflow_s / results if mlflow_s is not None and results else None
    mlflow_by_method = {
        r["name"]: round(r["s"], 4) for r in sorted(timed, key=lambda r: -r["s"]) if r["s"] > 1e-4
    }
    phases: dict[str, float] = {}
    for r in records:
        if r["k"] == "phase":
            phases[r["name"]] = phases.get(r["name"], 0.0) + r["s"]
    return {
        "training_s": training,
        "epochs": len(epochs),
        "efficiency": training / (wall * slots) if wall > 0 else 0.0,
        "first_result_s": min(firsts) - started if firsts else None,
        "results": results,
        "mlflow_s": mlflow_s,
        "mlflow_ms_per_result": per_result,
        "phases_s": phases,
        "mlflow_s_by_method": mlflow_by_method,
    }


def measure(command: list[str], timed: str = "", *, poll_s: float = 0.1, timeout_s: float = 1800) -> Run:
    """Run ``command`` in a fresh temporary directory and measure it (see the module docstring).

    Descendants still alive 10 s after the command exited (none should be) are terminated.
    """
    psutil = _psutil()
    workdir = tempfile.mkdtemp(prefix="bench-overhead-")
    timing_dir = os.path.join(workdir, ".timing")
    os.mkdir(timing_dir)
    log = open(os.path.join(workdir, "output.log"), "w")
    load_before = os.getloadavg()
    started = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=workdir, env=_env(timing_dir, timed), stdout=log, stderr=log)
    driver_peak = total_peak = 0
    driver_peak_at = 0.0
    seen: dict[int, Any] = {}
    try:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"{command[2:4]} ran over {timeout_s:.0f} s")
            try:
                driver = root.memory_info().rss
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = driver
            for child in children:
                seen.setdefault(child.pid, child)
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            if driver > driver_peak:
                driver_peak, driver_peak_at = driver, time.perf_counter() - t0
            total_peak = max(total_peak, total)
            time.sleep(poll_s)
        proc.wait()
        wall = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        _reap(psutil, list(seen.values()))
    stats = summarize(read_records(timing_dir), started, wall)
    if proc.returncode != 0:
        tail = Path(workdir, "output.log").read_text()[-2000:]
        print(f"warning: {' '.join(command[2:4])} exited {proc.returncode}:\n{tail}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return Run(
        wall_s=wall,
        driver_peak_rss_mib=driver_peak / MIB,
        driver_peak_at_s=driver_peak_at,
        total_peak_rss_mib=total_peak / MIB,
        returncode=proc.returncode,
        load_before=load_before,
        load_after=os.getloadavg(),
        **stats,
    )


def _reap(psutil: Any, processes: list[Any]) -> None:
    """Terminate the command's descendants that outlived it (by pid, as seen while it ran)."""
    alive = [p for p in processes if p.is_running()]
    if alive:
        _, alive = psutil.wait_procs(alive, timeout=10)
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    if alive:
        psutil.wait_procs(alive, timeout=5)


def compare(ours: Run, plain: Run, floor: Run) -> dict[str, Any]:
    """The JSON document of issue 6 (per-run keys plus the measurements behind them)."""

    def keys(run: Run) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(run).items()}

    return {
        "ours": keys(ours),
        "plain_ray": keys(plain),
        "floor": {**keys(floor), "mlflow_ms_per_result": None},
        "ratios": {
            "wall_vs_plain_ray": ours.wall_s / plain.wall_s,
            "wall_vs_floor": ours.wall_s / floor.wall_s,
        },
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(doc: dict[str, Any]) -> str:
    """One table: a row per variant, then the ratios and each target of ``ours``."""
    rows = [
        ("wall_s", "wall s", ".1f"),
        ("training_s", "training s", ".1f"),
        ("efficiency", "efficiency", ".2f"),
        ("driver_peak_rss_mib", "driver MiB", ".0f"),
        ("total_peak_rss_mib", "total MiB", ".0f"),
        ("first_result_s", "1st result s", ".1f"),
        ("mlflow_ms_per_result", "MLflow ms/res", ".2f"),
    ]
    head = f"{'':10}" + "".join(f"{label:>14}" for _, label, _ in rows)
    lines = [head]
    for name in ("ours", "plain_ray", "floor"):
        run = doc[name]
        lines.append(f"{name:10}" + "".join(f"{_fmt(run[k], spec):>14}" for k, _, spec in rows))
    r = doc["ratios"]
    lines.append(
        f"ratios: ours/plain_ray wall {r['wall_vs_plain_ray']:.2f}, ours/floor wall {r['wall_vs_floor']:.2f}"
    )
    lines.extend(target_lines(doc))
    return "\n".join(lines)


def target_lines(doc: dict[str, Any]) -> list[str]:
    """``target: measured (goal) met|MISSED`` for each target of ``ours``."""
    ours, ratios = doc["ours"], doc["ratios"]
    measured = {**{k: ours.get(k) for k in TARGETS}, **ratios}
    out = []
    for key, goal in TARGETS.items():
        value = measured.get(key)
        if value is None:
            out.append(f"  target {key}: not measured")
            continue
        ok = value >= goal if key == "efficiency" else value <= goal
        sign = ">=" if key == "efficiency" else "<="
        out.append(f"  target {key} {sign} {goal:g}: {value:.3g} {'met' if ok else 'MISSED'}")
    return out


def machine() -> dict[str, Any]:
    """Where and when it ran."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 trials x 5 epochs")
    parser.add_argument("--trials", type=int, default=None, help="default 32 (8 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="default 20 (5 with --quick)")
    parser.add_argument("--only", default="ours,plain_ray,floor", help="comma-separated variants")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    trials = args.trials or (8 if args.quick else 32)
    epochs = args.epochs or (5 if args.quick else 20)
    commands = {
        "ours": (ours_command(trials, epochs), OURS_TIMED),
        "plain_ray": (runs_command("plain_ray", trials, epochs), PLAIN_TIMED),
        "floor": (runs_command("floor", trials, epochs), ""),
    }
    wanted = [v for v in args.only.split(",") if v]
    unknown = [v for v in wanted if v not in commands]
    if unknown:
        parser.error(f"--only: unknown variant(s) {unknown}; known: {', '.join(commands)}")
    info = machine()
    print(f"overhead: {trials} trials x {epochs} epochs, {SLOTS} at a time; {info}", flush=True)
    runs: dict[str, Run] = {}
    for name in wanted:
        command, timed = commands[name]
        runs[name] = measure(command, timed)
        run = runs[name]
        print(
            f"  {name}: {run.wall_s:.1f} s (load {run.load_before[0]:.2f} -> {run.load_after[0]:.2f})",
            flush=True,
        )
    if set(runs) != set(commands):
        for name, run in runs.items():
            print(name, json.dumps(dataclasses.asdict(run)))
        return 0
    doc = {
        **compare(runs["ours"], runs["plain_ray"], runs["floor"]),
        "settings": {"trials": trials, "epochs": epochs, "slots": SLOTS, "machine": info},
    }
    print(render(doc))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0 if all(r.returncode == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
