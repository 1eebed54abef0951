"""The convergence policy on plain numbers: decisions, restart budget, lineage, state (pure)."""

import json
import math

import pytest

from orchestrator.policy import (
    CONTINUE,
    PRUNE,
    RESTART,
    STOP,
    ConvergencePolicy,
    PolicyConfig,
    thresholds_from,
)
from orchestrator.rungs import AshaRungs
from trainables.seeding import derive_seed


def good(t):  # loss, acc of a healthy run
    return 2.0 * math.exp(-t / 2) + 0.08, 0.97 - 0.85 * math.exp(-t / 2)


def at_chance(t):
    return 2.3026, 0.1


def feed(policy, tid, curve, epochs, **diag):
    """Feed epochs 1..epochs until a decision other than continue; return (epoch, decision)."""
    decision = None
    for epoch in range(1, epochs + 1):
        loss, acc = curve(epoch)
        decision = policy.observe(tid, epoch, loss, acc, **diag)
        if decision.action != CONTINUE:
            return epoch, decision
    return epochs, decision


def make(**kw):
    budget = kw.pop("budget", 30)
    total = kw.pop("total_epochs", 10_000)
    return ConvergencePolicy(PolicyConfig(chance=0.1, **kw), budget=budget, total_epochs=total, sweep_seed=7)


def test_a_healthy_run_is_stopped_as_converged_before_its_budget():
    policy = make()
    epoch, decision = feed(policy, "a", good, 30)
    assert decision.action == STOP and epoch < 30
    assert decision.verdict.status == "converged" and decision.verdict.step <= epoch


def test_a_nonfinite_loss_is_pruned_at_once():
    policy = make()
    epoch, decision = feed(policy, "a", lambda t: (math.nan if t >= 3 else 2.0, 0.1), 30)
    assert (epoch, decision.action, decision.verdict.status, decision.verdict.kind) == (
        3,
        PRUNE,
        "diverged",
        "nonfinite",
    )


def test_stuck_trials_restart_with_derived_seeds_until_max_restarts_then_are_pruned():
    policy = make(max_restarts=2)
    policy.add("t", {"lr": 0.1}, seed_key=4)
    seeds = []
    for attempt in (1, 2):
        _, decision = feed(policy, "t", at_chance, 30)
        assert decision.action == RESTART and decision.verdict.status == "stuck"
        assert decision.attempt == attempt and decision.seed == derive_seed(7, 4, attempt)
        seeds.append(decision.seed)
    _, decision = feed(policy, "t", at_chance, 30)
    assert decision.action == PRUNE and "no restart left" in decision.reason
    lineage = policy.lineage("t")
    assert [r.attempt for r in lineage] == [0, 1, 2] and [r.seed for r in lineage[1:]] == seeds
    assert all(r.outcome.startswith("restarted: stuck") for r in lineage[:2])
    assert policy.restart_epochs == lineage[1].epochs + lineage[2].epochs


def test_the_sweep_wide_restart_budget_is_respected():
    policy = make(restart_budget=0.001, total_epochs=5000)  # 5 epochs of restarts in all
    _, first = feed(policy, "a", at_chance, 30)
    assert first.action == RESTART
    feed(policy, "a", at_chance, 30)  # attempt 1 spends the budget
    _, other = feed(policy, "b", at_chance, 30)
    assert other.action == PRUNE and not policy.restart_budget_left()


def test_plateau_far_below_the_best_restarts_or_stops():
    def low_plateau(t):
        return 1.0 * math.exp(-t / 2) + 1.2, 0.6 - 0.4 * math.exp(-t / 2)

    pruning = make()
    pruning.complete("best", 0.97)
    _, decision = feed(pruning, "low", low_plateau, 30)
    assert decision.action == PRUNE and decision.verdict.status == "predicted_worse"
    policy = make(prune_predicted_worse=False)
    policy.complete("best", 0.97)
    _, decision = feed(policy, "low", low_plateau, 30)
    assert decision.action == RESTART and decision.verdict.status == "plateau_bad"
    no_restart = make(restart_on_plateau_bad=False, prune_predicted_worse=False)
    no_restart.complete("best", 0.97)
    _, decision = feed(no_restart, "low", low_plateau, 30)
    assert decision.action == STOP and decision.verdict.status == "plateau_bad"


def test_completed_trials_set_the_best_and_pruned_ones_do_not():
    policy = make()
    policy.complete("a", 0.9)
    policy.complete("b", 0.99, outcome="pruned")
    policy.complete("c", math.nan)
    assert policy.best == 0.9
    policy.complete("d", 0.95, outcome="converged")
    assert policy.best == 0.95


def test_remedies_change_the_config_and_are_recorded():
    policy = make(remedy_leaky_relu=True)
    policy.add("t", {"activation": "relu", "lr": 0.1})
    dead = [1.0] * 30
    _, decision = feed(policy, "t", at_chance, 30, dead_frac=dead[0])
    assert decision.action == RESTART
    if decision.verdict.kind == "dead_relu":
        assert decision.changes == {"activation": "leaky_relu"}


def test_state_round_trips_through_json_and_gives_the_same_decisions():
    policy = make()
    feed(policy, "a", good, 4)
    feed(policy, "b", at_chance, 30)
    policy.complete("z", 0.93)
    state = json.loads(json.dumps(policy.state_dict()))
    copy = make()
    copy.load_state_dict(state)
    assert json.dumps(copy.state_dict()) == json.dumps(policy.state_dict())
    for epoch in range(5, 30):
        loss, acc = good(epoch)
        assert copy.observe("a", epoch, loss, acc) == policy.observe("a", epoch, loss, acc)
    with pytest.raises(ValueError, match="version"):
        copy.load_state_dict({**state, "version": 99})


def test_inner_rank_rule_prunes_when_the_curve_says_nothing():
    policy = ConvergencePolicy(PolicyConfig(chance=0.1), budget=30, inner=AshaRungs(1, 2, 30))
    for tid, level in (("a", 0.9), ("b", 0.8)):
        policy.observe(tid, 1, 1.0, level)
    decision = policy.observe("c", 1, 1.5, 0.3)
    assert decision.action == PRUNE and "inner rule" in decision.reason


def test_memory_per_trial_is_bounded_by_the_history_window():
    policy = make(history=16, budget=500)
    for epoch in range(1, 400):
        policy.observe("long", epoch, 1.0 / epoch + 0.5 * math.sin(epoch), 0.5)
    assert len(policy.trials["long"].loss) == 16


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "up"}, "mode"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"restart_budget": 2.0}, "restart_budget"),
        ({"remedy_lr_factor": 1.5}, "remedy_lr_factor"),
    ],
)
def test_bad_policy_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**kw)


def test_unknown_threshold_is_named():
    with pytest.raises(ValueError, match="unknown threshold 'windw'"):
        thresholds_from({"windw": 3})
    assert thresholds_from({"window": 7}).window == 7
