"""The scheduler and the searcher at scale: decision time, memory per trial, Optuna suggest time.

``python -m benchmarks.scale [--quick] [--json PATH] [--trials N --epochs E --workers W]``:

- **decisions**: the product's ``ConvergenceScheduler`` (built by ``benchmarks.schedulers.
  make_convergence`` with the product defaults, ``ConvergenceSettings``) driven by the replay benchmark's
  simulated controller (``benchmarks.replay_sim.SimController``, real ``Trial`` objects, no Ray
  cluster) over ``--trials`` synthetic configurations (default 10,000) of ``--epochs`` epochs
  (default 100). Every ``on_trial_result`` call is timed in CPU time of the calling thread
  (``thread_time_ns``: what the decision costs, not the time another process held the core on
  a shared machine; wall-clock percentiles are reported beside it): the policy, the
  curve diagnosis and any extrapolation (calls that ran one are counted and summarised apart),
  plus the Ray adapter. ``choose_trial_to_run`` is timed too.
- **full budget**: the same scheduler fed every epoch of 500 trials (decisions not acted on),
  so that decisions on histories past the policy's 64-epoch window are measured too.
- **memory**: ``tracemalloc`` bytes held by a scheduler per live trial after every trial
  reported ``L`` epochs, for several ``L``: bounded means flat in ``L``.
- **searcher**: the orchestrator's searcher (``orchestrator.search.build_searcher`` on the default
  config: TPE, multivariate, constant liar, the default MLP space) suggesting its 1,000th and
  10,000th configuration, the study first filled with 999 / 9,999 finished trials (median CPU
  time of 5 suggestions; wall time in the details); beside it the same TPE seeing the whole
  history (``orchestrator.search.TPE_WINDOW = None``), univariate
  TPE and random search, measured the same way.

Curves (:func:`synthetic_bank`): ``shapes`` distinct runs resampled over the trials: 75% learn
(power law to a final accuracy in [0.6, 0.99], loss falling likewise), 10% stuck at chance
(0.1, 10 classes; a third with a vanishing gradient, a third with dead ReLUs), 8% diverge
(loss non-finite from a random epoch on), 7% oscillate; Gaussian noise on every point.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bank import Bank, ConfigCurves, Run

CHANCE = 0.1


# -- curves ------------------------------------------------------------------------------------
def _shape(rng: np.random.Generator, epochs: int) -> dict[str, np.ndarray]:
    """One synthetic run: val_acc, val_loss, train_loss, grad_norm, dead_frac per epoch."""
    t = np.arange(1, epochs + 1, dtype=float)
    noise = rng.normal(0.0, 0.004, epochs)
    kind = rng.choice(4, p=[0.75, 0.10, 0.08, 0.07])
    grad = 1.0 * t**-0.3 * rng.uniform(0.5, 2.0)
    dead = np.full(epochs, rng.uniform(0.0, 0.3))
    if kind == 1:  # stuck at chance
        acc = CHANCE + noise
        loss = math.log(10) + rng.normal(0.0, 0.003, epochs)
        which = rng.integers(3)
        if which == 1:
            grad = np.full(epochs, 1e-4)
        elif which == 2:
            dead = np.full(epochs, 0.95)
        return {"val_acc": acc, "val_loss": loss, "train_loss": loss, "grad_norm": grad, "dead_frac": dead}
    final, b = rng.uniform(0.6, 0.99), rng.uniform(0.3, 1.5)
    acc = final - (final - CHANCE) * t**-b + noise
    floor_loss = -math.log(final) * rng.uniform(0.8, 1.5)
    loss = floor_loss + (math.log(10) - floor_loss) * t**-b + np.abs(noise) * 5
    if kind == 2:  # diverges: non-finite loss from a random epoch on, accuracy back at chance
        at = int(rng.integers(2, epochs))
        loss[at:], acc[at:] = np.nan, CHANCE
    elif kind == 3:  # oscillates around a middling level
        level = rng.uniform(0.3, 0.7)
        acc = level + 0.15 * np.sin(t * rng.uniform(1.0, 3.0)) + noise
        loss = -np.log(np.clip(acc, 0.05, 0.99))
    return {
        "val_acc": np.clip(acc, 0.0, 1.0),
        "val_loss": loss,
        "train_loss": loss * 0.9,
        "grad_norm": grad,
        "dead_frac": dead,
    }


def synthetic_bank(trials: int, epochs: int, *, seed: int = 0, shapes: int = 2000) -> Bank:
    """A bank of ``trials`` configurations whose runs are ``shapes`` synthetic runs resampled."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(min(shapes, trials)):
        s = _shape(rng, epochs)
        acc = [float(v) for v in s["val_acc"]]
        last = CHANCE
        for i, v in enumerate(acc):  # the bank's NaN policy: val_acc always finite
            last = v if math.isfinite(v) else last
            acc[i] = last
        runs.append(
            Run(
                seed=0,
                budget=epochs,
                val_acc=tuple(acc),
                val_loss=tuple(float(v) for v in s["val_loss"]),
                train_loss=tuple(float(v) for v in s["train_loss"]),
                grad_norm=tuple(float(v) for v in s["grad_norm"]),
                dead_frac=tuple(float(v) for v in s["dead_frac"]),
                epoch_time=(1.0,) * epochs,
            )
        )
    picks = rng.integers(len(runs), size=trials)
    configs = tuple(
        ConfigCurves(f"c{i:05d}", {"lr": float(10 ** rng.uniform(-4, -1))}, (runs[k],))
        for i, k in enumerate(picks)
    )
    finals = [c.runs[0].final_acc for c in configs]
    best = max(range(trials), key=finals.__getitem__)
    return Bank(
        name="synthetic",
        path=Path("synthetic"),
        configs=configs,
        max_epochs=epochs,
        floor_acc=min(min(r.val_acc) for r in runs),
        chance_hint=CHANCE,
        target=finals[best],
        best_index=best,
    )


# -- decision time -----------------------------------------------------------------------------
def _percentiles(ns: list[int]) -> dict[str, float | None]:
    if not ns:
        return {"median": None, "p99": None, "max": None, "count": 0}
    a = np.asarray(ns, dtype=float) / 1000.0
    return {
        "median": float(np.median(a)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "count": int(a.size),
    }


def decision_times(trials: int, epochs: int, *, workers: int = 16, seed: int = 0) -> dict[str, Any]:
    """Replay ``trials`` synthetic configurations through the product's scheduler; time every decision.

    Returns percentiles (µs) of all ``on_trial_result`` calls (``all``), of those that ran an
    extrapolation (``with_extrapolation``), of ``choose_trial_to_run``, and the simulation's totals.
    """
    import analysis.extrapolation as extrapolation
    from benchmarks.replay_sim import SimController
    from benchmarks.schedulers import make_convergence

    bank = synthetic_bank(trials, epochs, seed=seed)
    scheduler = make_convergence(epochs, trials, chance=CHANCE)
    calls = {"extrapolate": 0}
    original_extrapolate = extrapolation.extrapolate

    def counted_extrapolate(*args: Any, **kwargs: Any) -> Any:
        calls["extrapolate"] += 1
        return original_extrapolate(*args, **kwargs)

    decide, choose = scheduler.on_trial_result, scheduler.choose_trial_to_run
    all_ns: list[int] = []
    extrapolating_ns: list[int] = []
    choose_ns: list[int] = []
    wall_ns: list[int] = []
    clock, wall = time.thread_time_ns, time.perf_counter_ns

    def timed_result(controller: Any, trial: Any, result: dict) -> str:
        before = calls["extrapolate"]
        started, start = wall(), clock()
        out = decide(controller, trial, result)
        elapsed = clock() - start
        wall_ns.append(wall() - started)
        all_ns.append(elapsed)
        if calls["extrapolate"] != before:
            extrapolating_ns.append(elapsed)
        return out

    def timed_choose(controller: Any) -> Any:
        start = clock()
        out = choose(controller)
        choose_ns.append(clock() - start)
        return out

    scheduler.on_trial_result, scheduler.choose_trial_to_run = timed_result, timed_choose
    extrapolation.extrapolate = counted_extrapolate
    try:
        started = time.perf_counter()
        stats = SimController(scheduler, bank, range(trials), workers, workers).run()
        elapsed = time.perf_counter() - started
    finally:
        extrapolation.extrapolate = original_extrapolate
    actions: dict[str, int] = {}
    for decision in scheduler.decisions.values():
        actions[decision.action] = actions.get(decision.action, 0) + 1
    return {
        "all": _percentiles(all_ns),
        "all_wall_clock": _percentiles(wall_ns),
        "with_extrapolation": _percentiles(extrapolating_ns),
        "choose_trial_to_run": _percentiles(choose_ns),
        "extrapolations": calls["extrapolate"],
        "results": len(all_ns),
        "epochs_budgeted": trials * epochs,
        "last_actions": actions,
        "restarts": scheduler.restarts,
        "best_final_acc": stats.best_final_acc if hasattr(stats, "best_final_acc") else None,
        "sim_wall_s": elapsed,
    }


def full_budget_times(trials: int, epochs: int, *, seed: int = 0) -> dict[str, Any]:
    """Decision time (µs) when every trial reports every epoch of its budget.

    The scheduler's decisions are not acted on (a stopped or pruned trial keeps reporting), so
    every decision sees a history up to the budget: past the policy's window of 64 epochs the
    extrapolation's basis cache misses on every call. Trials report epoch by epoch in turn, as
    concurrent trials do.
    """
    from ray.tune.experiment import Trial

    import analysis.extrapolation as extrapolation
    from benchmarks.schedulers import make_convergence

    bank = synthetic_bank(trials, epochs, seed=seed)
    scheduler = make_convergence(epochs, trials, chance=CHANCE)
    controller = _Controller()
    stubs = [Trial("full", config={"attempt": 0}, trial_id=f"f{i:05d}", stub=True) for i in range(trials)]
    for trial in stubs:
        scheduler.on_trial_add(controller, trial)
    calls = {"extrapolate": 0}
    original_extrapolate = extrapolation.extrapolate

    def counted_extrapolate(*args: Any, **kwargs: Any) -> Any:
        calls["extrapolate"] += 1
        return original_extrapolate(*args, **kwargs)

    all_ns, extrapolating_ns, late_ns, wall_ns = [], [], [], []
    clock, wall = time.thread_time_ns, time.perf_counter_ns
    extrapolation.extrapolate = counted_extrapolate
    try:
        for e in range(epochs):
            for trial, config in zip(stubs, bank.configs, strict=True):
                run = config.runs[0]
                result = {
                    "epoch": e + 1,
                    "val_loss": run.val_loss[e],
                    "val_acc": run.val_acc[e],
                    "grad_norm": run.grad_norm[e],
                    "dead_frac": run.dead_frac[e],
                    "attempt": trial.config.get("attempt", 0),
                }
                before = calls["extrapolate"]
                started, start = wall(), clock()
                scheduler.on_trial_result(controller, trial, result)
                elapsed = clock() - start
                wall_ns.append(wall() - started)
                all_ns.append(elapsed)
                if calls["extrapolate"] != before:
                    extrapolating_ns.append(elapsed)
                if e >= 64:
                    late_ns.append(elapsed)
    finally:
        extrapolation.extrapolate = original_extrapolate
    return {
        "all": _percentiles(all_ns),
        "with_extrapolation": _percentiles(extrapolating_ns),
        "after_epoch_64": _percentiles(late_ns),
        "all_wall_clock": _percentiles(wall_ns),
        "extrapolations": calls["extrapolate"],
    }


# -- memory ------------------------------------------------------------------------------------
def clear_caches() -> None:
    """Empty the process-wide, size-bounded caches of the curve analysis."""
    import analysis.convergence as convergence
    import analysis.extrapolation as extrapolation
    import analysis.plateau as plateau

    for module in (convergence, extrapolation, plateau):
        for fn in vars(module).values():
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()


class _Controller:
    """The controller calls a restart makes; nothing else is needed to feed results directly."""

    search_alg = None

    def pause_trial(self, trial: Any, should_checkpoint: bool = True) -> None:
        pass


def scheduler_bytes_per_trial(n_trials: int, lengths: tuple[int, ...], *, seed: int = 0) -> dict[int, float]:
    """Bytes a fresh scheduler holds per live trial after each of ``n_trials`` reported ``L`` epochs.

    ``tracemalloc`` counts what is allocated after the trials were created (Ray's ``Trial``
    objects are not the scheduler's) and is still held once every trial reported ``L`` epochs of a
    learning curve, epoch by epoch across trials as live trials report; decisions are ignored so
    every trial stays live for all ``L`` epochs. The extrapolation's basis cache (a fixed number
    of entries for the whole process, not per trial) is cleared before counting.
    """
    from ray.tune.experiment import Trial

    from benchmarks.schedulers import make_convergence

    out: dict[int, float] = {}
    rng = np.random.default_rng(seed)
    controller = _Controller()
    for length in lengths:
        scheduler = make_convergence(max(lengths) + 1, n_trials, chance=CHANCE)
        trials = [
            Trial("mem", config={"attempt": 0}, trial_id=f"m{i:05d}", stub=True) for i in range(n_trials)
        ]
        t = np.arange(1, length + 1, dtype=float)
        finals = rng.uniform(0.6, 0.99, n_trials)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for trial in trials:
            scheduler.on_trial_add(controller, trial)
        for e in range(length):
            for i, trial in enumerate(trials):
                acc = float(finals[i] - (finals[i] - CHANCE) * t[e] ** -0.5 + rng.normal(0, 0.004))
                result = {
                    "epoch": e + 1,
                    "val_loss": float(2.3 * t[e] ** -0.5),
                    "val_acc": acc,
                    "grad_norm": 0.5,
                    "dead_frac": 0.1,
                    "attempt": trial.config.get("attempt", 0),
                }
                scheduler.on_trial_result(controller, trial, result)
        clear_caches()
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out[length] = held / n_trials
    return out


# -- searcher ----------------------------------------------------------------------------------
def default_config(overrides: list[str] | None = None) -> Any:
    """The product's default sweep config (``conf/``) with ``overrides``, validated."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from orchestrator.config import load_config
    from orchestrator.schema import register_schemas

    register_schemas()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides or [])
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def suggest_ms(
    n: int,
    *,
    overrides: list[str] | None = None,
    repeats: int = 5,
    seed: int = 0,
    window: int | None | str = "default",
) -> tuple[float, float]:
    """Median (CPU ms, wall ms) the orchestrator's searcher takes to suggest configuration ``n``.

    The study first gets ``n - 1`` finished trials (random values in the space, random
    accuracies), as after a sweep of that length; then the searcher suggests ``repeats``
    configurations one after the other (each a new trial, running while the next is suggested).
    ``window``: ``orchestrator.search.TPE_WINDOW`` for this measurement ("default": as it is).
    """
    import optuna

    from orchestrator import search

    cfg = default_config(overrides)
    saved = search.TPE_WINDOW
    if window != "default":
        search.TPE_WINDOW = window
    try:
        searcher = search.build_searcher(cfg)
    finally:
        search.TPE_WINDOW = saved
    study = searcher._ot_study  # the searcher's in-memory study
    space = searcher._space
    rng = np.random.default_rng(seed)
    sampler = optuna.samplers.RandomSampler(seed=seed)
    filler = optuna.create_study(sampler=sampler, direction="maximize")
    made = []
    for _ in range(n - 1):
        trial = filler.ask(space)
        made.append(
            optuna.trial.create_trial(
                params=trial.params, distributions=space, value=float(rng.uniform(0.1, 0.99))
            )
        )
    study.add_trials(made)
    cpu, wall = [], []
    for k in range(repeats):
        started, start = time.perf_counter(), time.thread_time()
        params = searcher.suggest(f"scale_{n}_{k}")
        cpu.append(1000.0 * (time.thread_time() - start))
        wall.append(1000.0 * (time.perf_counter() - started))
        if params is None:
            raise RuntimeError("the searcher suggested nothing")
    return statistics.median(cpu), statistics.median(wall)


#: The default searcher and the alternatives measured beside it: (``search.*`` overrides, TPE window).
ALTERNATIVES: dict[str, tuple[list[str], int | None | str]] = {
    "tpe_default": ([], "default"),
    "tpe_full_history": ([], None),
    "tpe_univariate": (["search.multivariate=false"], "default"),
    "random": (["search=random"], "default"),
}


# -- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a test (seconds)")
    parser.add_argument("--trials", type=int, default=None, help="default 10000 (300 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="default 100 (30 with --quick)")
    parser.add_argument("--workers", type=int, default=16, help="simulated concurrent trials")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--parts", default="decisions,memory,searcher", help="which parts to run")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"decisions", "memory", "searcher"}:
        parser.error(f"--parts: choose from decisions, memory, searcher; got {args.parts!r}")
    trials = args.trials or (300 if args.quick else 10_000)
    epochs = args.epochs or (30 if args.quick else 100)
    mem_trials, lengths = (50, (20, 60)) if args.quick else (200, (20, 100, 400))
    suggest_at = (100, 300) if args.quick else (1000, 10_000)
    started = time.time()
    print(
        f"scale: {trials} trials x {epochs} epochs, {args.workers} workers; load {os.getloadavg()}",
        flush=True,
    )
    if "decisions" in parts:
        decisions = decision_times(trials, epochs, workers=args.workers)
        print(f"  decisions done ({decisions['sim_wall_s']:.1f} s)", flush=True)
        full = full_budget_times(50 if args.quick else 500, epochs)
        print("  full-budget decisions done", flush=True)
    if "memory" in parts:
        memory = scheduler_bytes_per_trial(mem_trials, lengths)
        print("  memory done", flush=True)
    measured = {
        name: {str(n): suggest_ms(n, overrides=ov, window=w) for n in suggest_at}
        for name, (ov, w) in ALTERNATIVES.items()
        if "searcher" in parts
    }
    if parts != {"decisions", "memory", "searcher"}:
        print(json.dumps({"parts": sorted(parts), "searcher": measured}, indent=1))
        if "decisions" in parts:
            print(json.dumps({"decisions": decisions, "full": full}, indent=1))
        if "memory" in parts:
            print(json.dumps({"memory": memory}))
        return 0
    suggest = {name: {n: cpu for n, (cpu, _) in m.items()} for name, m in measured.items()}
    suggest_wall = {name: {n: w for n, (_, w) in m.items()} for name, m in measured.items()}
    doc = {
        "decision_us": {"median": decisions["all"]["median"], "p99": decisions["all"]["p99"]},
        "scheduler_bytes_per_trial": memory[epochs] if epochs in memory else memory[max(memory)],
        "optuna_suggest_ms": suggest["tpe_default"],
        "details": {
            "decisions": decisions,
            "decisions_full_budget": full,
            "full_budget_trials": 50 if args.quick else 500,
            "bytes_per_trial_by_epochs_reported": {str(k): v for k, v in memory.items()},
            "memory_trials": mem_trials,
            "optuna_suggest_ms_by_setting": suggest,
            "optuna_suggest_wall_ms_by_setting": suggest_wall,
        },
        "settings": {
            "trials": trials,
            "epochs": epochs,
            "workers": args.workers,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg": os.getloadavg(),
            "wall_s": time.time() - started,
        },
    }
    print(render(doc))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


def _row(lines: list[str], label: str, p: dict[str, Any]) -> None:
    """One line of the decision-time table (skipped when nothing was measured)."""
    if p["count"]:
        lines.append(f"{label:34}{p['median']:>10.1f}{p['p99']:>10.1f}{p['max']:>10.0f}{p['count']:>10}")


def render(doc: dict[str, Any]) -> str:
    """The tables of one run."""
    d = doc["details"]["decisions"]
    lines = [
        f"{'decision CPU time (µs)':34}{'median':>10}{'p99':>10}{'max':>10}{'calls':>10}",
    ]
    for key, label in (
        ("all", "on_trial_result (all)"),
        ("all_wall_clock", "  ... in wall-clock time"),
        ("with_extrapolation", "  ... that extrapolated"),
        ("choose_trial_to_run", "choose_trial_to_run"),
    ):
        _row(lines, label, d[key])
    lines.append(
        f"results {d['results']} of {d['epochs_budgeted']} budgeted epochs, "
        f"{d['extrapolations']} extrapolations, {d['restarts']} restarts, "
        f"simulated in {d['sim_wall_s']:.1f} s"
    )
    f = doc["details"]["decisions_full_budget"]
    n_full = doc["details"]["full_budget_trials"]
    for key, label in (
        ("all", f"every epoch of {n_full} trials"),
        ("with_extrapolation", "  ... that extrapolated"),
        ("after_epoch_64", "  ... after epoch 64"),
        ("all_wall_clock", "  ... in wall-clock time"),
    ):
        _row(lines, label, f[key])
    mem = doc["details"]["bytes_per_trial_by_epochs_reported"]
    lines.append(
        "scheduler bytes per live trial after L epochs: "
        + ", ".join(f"L={k}: {v:,.0f}" for k, v in mem.items())
    )
    lines.append(
        f"{'optuna suggest CPU ms at config':34}" + "".join(f"{n:>10}" for n in doc["optuna_suggest_ms"])
    )
    for name, values in doc["details"]["optuna_suggest_ms_by_setting"].items():
        lines.append(f"  {name:32}" + "".join(f"{v:>10.1f}" for v in values.values()))
    dec = doc["decision_us"]
    lines.append(
        f"targets: median {dec['median']:.1f} µs (<= 50) {'met' if dec['median'] <= 50 else 'MISSED'}, "
        f"p99 {dec['p99']:.0f} µs (<= 1000) {'met' if dec['p99'] <= 1000 else 'MISSED'}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
