"""The metric's scale: margins in units of it, decisions invariant when a metric is re-expressed.

Recorded curves (``benchmarks/curves``) are replayed through the policy as a sweep of 4 workers
would (pure: no Ray), once with the accuracy (mode max, chance c) and once with the error
``S * (1 - acc)`` (mode min, chance ``S * (1 - c)``, scale ``S``), the loss unchanged.
Accuracies are put on a dyadic grid first so the transformation itself is exact in floating point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bank import Bank, load_bank
from orchestrator.policy import (
    CONTINUE,
    PRUNE,
    RESTART,
    STATE_VERSION,
    STOP,
    ConvergenceSettings,
    PolicyConfig,
    SettingError,
    policy_from_settings,
)

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "curves"
S = 300.0
Ends = dict[str, list[tuple[int, int, str]]]  # trial -> (attempt, epoch, action) of every non-continue


def bank(name: str) -> Bank:
    path = CURVES / name
    if not path.exists():
        pytest.skip(f"curve bank {path} is missing")
    return load_bank(path)


def dyadic(acc: float) -> float:
    return round(acc * 2**20) / 2**20 if math.isfinite(acc) else acc


def replay(b: Bank, settings: dict[str, Any], *, error: bool, scale: float | None = 1.0, workers: int = 4):
    """Every decision of the policy on ``b``'s configurations; ``error``: the metric is S * (1 - acc)."""
    chance = b.chance_hint if not error or b.chance_hint is None else S * (1.0 - b.chance_hint)
    policy = policy_from_settings(
        settings,
        mode="min" if error else "max",
        chance=chance,
        budget=b.max_epochs,
        total_epochs=len(b.configs) * b.max_epochs,
        scale=scale,
    )
    metric: Callable[[float], float] = (lambda a: S * (1.0 - a)) if error else (lambda a: a)
    ends: Ends = {}
    queue, active = list(range(len(b.configs))), {}
    while queue or active:
        while queue and len(active) < workers:
            i = queue.pop(0)
            policy.add(f"t{i:03d}", seed_key=i)
            active[f"t{i:03d}"] = [i, 0, 0]
        for tid in list(active):
            i, attempt, epoch = active[tid]
            run, epoch = b.configs[i].run_for_attempt(attempt), epoch + 1
            active[tid][2] = epoch
            value = metric(dyadic(run.val_acc[epoch - 1]))
            at = epoch - 1
            d = policy.observe(
                tid, epoch, run.val_loss[at], value, run.grad_norm[at], run.dead_frac[at], run.epoch_time[at]
            )
            if d.action != CONTINUE:
                ends.setdefault(tid, []).append((attempt, epoch, d.action))
            if d.action == RESTART:
                active[tid] = [i, d.attempt, 0]
            elif d.action in (STOP, PRUNE) or epoch >= run.budget:
                outcome = {STOP: "converged", PRUNE: "pruned"}.get(d.action, "completed")
                policy.complete(tid, value, outcome)
                del active[tid]
    return ends, policy


@pytest.mark.parametrize(
    ("name", "settings"),
    [("digits.jsonl.gz", {"inner": None}), ("mnist1d.jsonl.gz", {})],
    ids=["digits-diagnosis-only", "mnist1d-with-rungs"],
)
def test_an_error_in_units_of_its_scale_decides_as_the_accuracy(name, settings):
    b = bank(name)
    original, _ = replay(b, settings, error=False)
    error, policy = replay(b, settings, error=True, scale=S)
    assert policy.scale == S
    assert len(original) >= 0.8 * len(b.configs)  # most trials ended early: a real comparison
    assert error == original


def test_a_measured_scale_decides_as_the_accuracy_on_most_trials():
    b = bank("digits.jsonl.gz")
    original, _ = replay(b, {"inner": None}, error=False)
    measured, policy = replay(b, {"inner": None}, error=True, scale=None)
    assert 0.5 * S < policy.scale < 1.5 * S  # a fresh model's error: most start near chance
    same = [tid for tid in original if measured.get(tid) == original[tid]]
    assert len(same) >= 0.9 * len(original)
    pruned = {t for t, e in original.items() if e[-1][2] == PRUNE}
    assert len(pruned ^ {t for t, e in measured.items() if e[-1][2] == PRUNE}) <= 0.05 * len(b.configs)


def test_margins_are_in_units_of_the_scale():
    base = PolicyConfig(mode="max", chance=0.1)
    pct = policy_from_settings({}, mode="max", chance=10.0, budget=30, total_epochs=None, scale=100.0)
    th, scaled = base.thresholds, pct.thresholds
    assert scaled.chance_margin == 100 * th.chance_margin and scaled.bad_margin == 100 * th.bad_margin
    assert scaled.predict_margin == 100 * th.predict_margin and scaled.rel_tol == th.rel_tol
    # a percentage stuck at chance (10 %) is judged as the fraction stuck at 0.1
    frac = policy_from_settings({}, mode="max", chance=0.1, budget=30, total_epochs=None)
    for epoch in range(1, 13):
        a = frac.observe("t", epoch, 2.3026, 0.1 + 0.005 * (epoch % 2))
        b = pct.observe("t", epoch, 2.3026, 10.0 + 0.5 * (epoch % 2))
        assert (a.action, a.verdict.status, a.verdict.kind) == (b.action, b.verdict.status, b.verdict.kind)
    assert a.action == PRUNE and a.verdict.kind == "chance"


def test_the_measured_scale_is_the_median_first_epoch_error_of_first_attempts():
    policy = policy_from_settings({}, mode="min", chance=None, budget=30, total_epochs=None, scale=None)
    assert policy.scale == 1.0  # nothing seen yet
    policy.observe("a", 2, 1.0, 50.0)  # not an epoch 1: the current result's value until one is
    assert policy.scale == 50.0
    policy.observe("b", 1, 1.0, 0.0)
    assert 0.0 < policy.scale < 1e-9  # floored
    for tid, value in (("c", -300.0), ("d", 200.0), ("e", math.nan)):
        policy.observe(tid, 1, 1.0, value)
    assert policy.scale == 200.0  # median of |0|, |-300|, |200|; NaN is no opening value
    state = policy.state_dict()
    assert state["version"] == STATE_VERSION == 7
    assert state["scale"]["openings"] == {"b": 0, "c": 300, "d": 200}
    copy = policy_from_settings({}, mode="min", chance=None, budget=30, total_epochs=None, scale=None)
    copy.load_state_dict(state)
    assert copy.scale == 200.0 and copy.state_dict() == state


def test_a_version_3_state_still_loads():
    policy = policy_from_settings({}, mode="max", chance=0.1, budget=30, total_epochs=None)
    policy.observe("a", 1, 2.0, 0.3)
    state = policy.state_dict()
    old = {k: v for k, v in state.items() if k != "scale"} | {"version": 3}
    copy = policy_from_settings({}, mode="max", chance=0.1, budget=30, total_epochs=None)
    copy.load_state_dict(old)
    assert copy.state_dict() == state


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(mode="max", scale=None), "scale: must be given for mode=max (the metric's best possible"),
        (dict(mode="min", scale=0.0), "scale: must be a finite number > 0"),
        (dict(mode="min", scale=math.inf), "scale: must be a finite number > 0"),
        (dict(mode="min", scale=True), "scale: must be a finite number > 0"),
    ],
)
def test_bad_scales_are_refused(kw, message):
    with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PolicyConfig(**kw)
    with pytest.raises(SettingError, match="scale"):
        ConvergenceSettings().policy_config(mode=kw["mode"], chance=None, scale=kw["scale"])


def test_a_version_4_state_loads_with_an_empty_restart_record():
    policy = policy_from_settings({}, mode="max", chance=0.1, budget=30, total_epochs=None)
    policy.observe("a", 1, 2.0, 0.3)
    state = policy.state_dict()
    old = {k: v for k, v in state.items() if k != "restarts"}
    old |= {"version": 4, "restarts_finished": 3, "restarts_succeeded": 2}  # counted over all kinds then
    copy = policy_from_settings({}, mode="max", chance=0.1, budget=30, total_epochs=None)
    copy.load_state_dict(old)
    assert copy.state_dict() == state and copy.restarts.totals() == (0, 0)
