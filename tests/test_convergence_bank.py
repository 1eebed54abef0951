"""Calibration of the convergence verdicts on the recorded curve banks (replayed online, no Ray).

Each run is replayed epoch by epoch through ``diagnose`` as a scheduler would, and the first
verdict that is not "progressing" is checked against how the run really ended:
- a prune (predicted_worse, diverged, plateau_bad) must not hit a run that would end within half
  an accuracy point of the best;
- a "converged at t" run must end close to its accuracy at t;
- a "stuck" run must be one that would not have ended near the best anyway; how often the next
  seed (seed + 1 of the same configuration) ends better is measured and printed.
Run with ``pytest -s`` to see the figures.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from analysis.convergence import (
    CONVERGED,
    DIVERGED,
    PLATEAU_BAD,
    PREDICTED_WORSE,
    PROGRESSING,
    STUCK,
    diagnose,
)

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "curves"
DIGITS = CURVES / "digits.jsonl.gz"
LCBENCH = CURVES / "lcbench" / "lcbench-126026.jsonl.gz"
PRUNES = (PREDICTED_WORSE, DIVERGED, PLATEAU_BAD)
NEAR = 0.005  # "within half an accuracy point"


def load(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"curve bank {path} is missing")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def floats(values: list | None) -> list[float] | None:
    return None if values is None else [math.nan if v is None else float(v) for v in values]


def final(run: dict) -> float:
    """The val_acc at the end of the budget; NaN for a run that stopped on a non-finite loss."""
    acc = run["val_acc"]
    return math.nan if len(acc) < run["epochs"] or acc[-1] is None else float(acc[-1])


def replay(run: dict, best: float | None, chance: float | None) -> tuple[str, str | None, int]:
    """(status, kind, epoch) of the first verdict that is not progressing (or of the last epoch)."""
    loss, acc = floats(run["val_loss"]), floats(run["val_acc"])
    grad, dead = floats(run["grad_norm"]), floats(run["dead_frac"])
    for t in range(1, len(loss) + 1):
        cut = {"grad_norm": grad[:t] if grad else None, "dead_frac": dead[:t] if dead else None}
        verdict = diagnose(loss[:t], metric=acc[:t], budget=run["epochs"], best=best, chance=chance, **cut)
        if verdict.status != PROGRESSING:
            return verdict.status, verdict.kind, t
    return PROGRESSING, None, len(loss)


def within(gains: np.ndarray) -> str:
    return f"final - acc(t) <= 0.5 pt {np.mean(gains <= 0.005):.0%}, <= 1 pt {np.mean(gains <= 0.01):.0%}"


def replays(runs: list[dict], best: Iterator[float | None], chance: float | None) -> list[tuple]:
    return [(run, *replay(run, b, chance)) for run, b in zip(runs, best, strict=True)]


@pytest.fixture(scope="module")
def digits() -> dict:
    runs = load(DIGITS)
    finals = {(r["config_id"], r["seed"]): final(r) for r in runs}
    top: dict[str, float] = {}
    for (cid, _), value in finals.items():
        top[cid] = max(top.get(cid, 0.0), value if value == value else 0.0)
    others = [max(v for c, v in top.items() if c != r["config_id"]) for r in runs]
    q90 = float(np.nanpercentile(list(finals.values()), 90))
    return {
        "runs": runs,
        "finals": finals,
        "bank_best": max(top.values()),
        "q90": q90,
        "with_best": replays(runs, iter(others), chance=0.1),  # the best of every other configuration
        "mid_search": replays(runs, iter([q90] * len(runs)), chance=0.1),  # a best found midway
        "no_best": replays(runs, iter([None] * len(runs)), chance=0.1),  # the first trials of a sweep
    }


def test_prunes_never_hit_a_run_that_would_end_near_the_bank_best(digits: dict) -> None:
    pruned = [(run, s) for run, s, _, _ in digits["with_best"] if s in PRUNES]
    false = [run for run, _ in pruned if final(run) >= digits["bank_best"] - NEAR]
    worse = [run for run, s in pruned if s == PREDICTED_WORSE]
    used = sum(t for *_, t in digits["with_best"]) / sum(r["epochs"] for r in digits["runs"])
    print(f"\ndigits vs the best other config: {len(pruned)} prunes ({len(worse)} predicted_worse), ", end="")
    print(f"{len(false)} would have ended within 0.5 pt of the bank best; epochs used {used:.0%}")
    assert len(worse) >= 100  # the rule has power: most of the 120 x 3 runs are hopeless against 0.98
    assert not false
    assert used < 0.4


def test_prunes_spare_contenders_mid_search(digits: dict) -> None:
    best = digits["q90"]
    contenders = [(run, s) for run, s, _, _ in digits["mid_search"] if final(run) >= best - NEAR]
    pruned = [(run, s) for run, s, _, _ in digits["mid_search"] if s in PRUNES]
    false = [run for run, s in contenders if s in PRUNES]
    print(f"\ndigits vs best {best:.4f} (90th percentile): {len(pruned)} prunes, ", end="")
    print(f"{len(false)} of {len(contenders)} contenders pruned")
    assert len(false) <= 0.02 * len(pruned) and len(false) <= 0.05 * len(contenders)


def test_converged_runs_end_near_their_accuracy_at_the_verdict(digits: dict) -> None:
    gains = [final(run) - run["val_acc"][t - 1] for run, s, _, t in digits["no_best"] if s == CONVERGED]
    gains = np.array(gains)
    print(f"\ndigits converged: {gains.size} runs, {within(gains)}, mean {gains.mean():+.4f}")
    assert gains.size >= 8
    assert np.mean(gains <= 0.01) >= 0.8 and gains.mean() < 0.01


def test_converged_runs_on_lcbench_end_near_their_accuracy_at_the_verdict() -> None:
    runs = load(LCBENCH)[:300]
    verdicts = replays(runs, iter([None] * len(runs)), chance=None)
    gains = np.array([final(run) - run["val_acc"][t - 1] for run, s, _, t in verdicts if s == CONVERGED])
    saved = np.mean([run["epochs"] - t for run, s, _, t in verdicts if s == CONVERGED])
    print(
        f"\nLCBench 126026 converged: {gains.size} of {len(runs)}, {within(gains)}, {saved:.0f} epochs saved"
    )
    assert gains.size >= 200
    assert np.mean(gains <= 0.005) >= 0.9 and np.mean(gains <= 0.01) >= 0.95


def test_stuck_runs_would_not_have_ended_near_the_best(digits: dict) -> None:
    stuck = [(run, kind, t) for run, s, kind, t in digits["no_best"] if s == STUCK]
    finals = np.array([final(run) for run, _, _ in stuck])
    chance = sum(k == "chance" for _, k, _ in stuck)
    print(
        f"\ndigits stuck: {len(stuck)} runs ({chance} at chance), {np.sum(finals > 0.5)} end above 0.5, ",
        end="",
    )
    print(f"the best of them at {np.nanmax(finals):.3f}")
    assert len(stuck) >= 100
    assert np.nanmax(finals) < digits["bank_best"] - 0.03
    assert np.sum(finals > 0.5) <= 0.05 * len(stuck)


def test_restart_figures_of_stuck_runs(digits: dict) -> None:
    """How often the next seed ends better: measured, printed, and pinned loosely (no claim of 70%).

    The digits bank's stuck configurations are mostly stuck for every seed (learning rate far too
    high or too low, deep sigmoid stacks), so a restart with a new seed alone seldom rescues them.
    """
    rows = []
    for run, status, kind, t in digits["no_best"]:
        if status != STUCK or run["seed"] >= 2:
            continue
        mine, nxt = final(run), digits["finals"][(run["config_id"], run["seed"] + 1)]
        at_t = max(v for v in floats(run["val_acc"])[:t] if v == v)
        rows.append((kind, nxt > mine if mine == mine else nxt == nxt, nxt > mine + 0.01, nxt > at_t))
    for kind in sorted({k for k, *_ in rows}):
        better, by_1pt, beat_t = np.mean([r[1:] for r in rows if r[0] == kind], axis=0)
        print(
            f"\ndigits stuck/{kind}: {sum(r[0] == kind for r in rows)} restarts; next seed ends better ",
            end="",
        )
        print(
            f"{better:.0%} (by > 1 pt {by_1pt:.0%}), beats the attempt's best at its verdict {beat_t:.0%}",
            end="",
        )
    assert len(rows) >= 60
    share = np.mean([r[1] for r in rows])
    assert 0.2 <= share <= 0.6  # pinned: a change here changes the policy's restart arithmetic
