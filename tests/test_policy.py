"""The convergence policy on plain numbers: decisions, restart budget, lineage, state (pure)."""

import gzip
import json
import math
from pathlib import Path

import pytest

from analysis.convergence import Thresholds
from orchestrator.policy import (
    CONTINUE,
    PRUNE,
    RESTART,
    STATE_VERSION,
    STOP,
    AshaRungs,
    ConvergencePolicy,
    ConvergenceSettings,
    CostRungs,
    Decision,
    GuardedRule,
    PolicyConfig,
    Reading,
    SettingError,
    decision_text,
    policy_from_settings,
    thresholds_from,
)
from orchestrator.policy.evidence import TRUSTED_AUC, rank_auc
from orchestrator.seeding import derive_seed

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "curves"


def good(t):  # loss, acc of a healthy run
    return 2.0 * math.exp(-t / 2) + 0.08, 0.97 - 0.85 * math.exp(-t / 2)


def at_chance(t):
    return 2.3026, 0.1


def low_plateau(t):
    return 1.0 * math.exp(-t / 2) + 1.2, 0.6 - 0.4 * math.exp(-t / 2)


# The stuck trial of tests/test_end_to_end.py (digits, sgd_momentum lr 0.1, seed 1), recorded:
# (val_loss, val_acc, dead_frac). It learns to 0.68 in epoch 1, blows up, and collapses to chance
# with 69% of its ReLUs dead; other seeds of the same configuration end near 0.97.
COLLAPSING = [
    (1.3729, 0.6844, 0.03),
    (5.1735, 0.3467, 0.23),
    (2.3016, 0.1156, 0.64),
    (2.313, 0.1022, 0.69),
    (2.3033, 0.1022, 0.69),
    (2.3052, 0.1, 0.69),
    (2.3059, 0.1, 0.69),
    (2.3037, 0.1022, 0.69),
]


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
    rules = kw.pop("rules", ())
    return ConvergencePolicy(
        PolicyConfig(chance=0.1, **kw), budget=budget, total_epochs=total, sweep_seed=7, rules=rules
    )


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


def test_a_trial_stuck_at_chance_restarts_on_trust_then_its_kind_stops_restarting():
    """The first stuck trial restarts on trust; its new attempt is no better where the first one
    ended, so it is cut there and counts as a restart that did not pay; the next stuck trial is
    pruned, its reason naming that record."""
    policy = make(restart_trust=1)
    epoch, decision = feed(policy, "t", at_chance, 30)
    assert decision.action == RESTART and decision.verdict.status == "stuck" and epoch <= 10
    assert decision.reason.endswith("; stuck restart 1 of 1 on trust")
    again, decision = feed(policy, "t", at_chance, 30)
    assert again == epoch and decision.action == PRUNE
    assert decision.reason.startswith(f"restart did not pay: 0.1 at epoch {epoch}")
    policy.complete("t", 0.1, "pruned")  # as the scheduler does after a prune
    assert policy.restarts.state_dict()["paid"] == {"stuck": 0}
    _, decision = feed(policy, "u", at_chance, 30)
    assert decision.action == PRUNE and decision.verdict.status == "stuck"
    assert decision.reason.endswith("not restarted: stuck restarts paid only 0 of 1 (needs 50%)")
    assert policy.lineage("u")[-1].attempt == 0


def test_without_trust_nothing_restarts_before_the_record_says_so():
    policy = make(restart_trust=0)
    _, decision = feed(policy, "t", at_chance, 30, dead_frac=0.95)
    assert decision.action == PRUNE
    assert decision.reason.endswith("not restarted: no dead_units restart has finished yet (0 running)")


def test_dead_relus_restart_with_derived_seeds_until_max_restarts_then_are_pruned():
    """Each attempt at chance with dead ReLUs is cut where the one before it ended (its restart
    did not pay) and, while restarts are left and the dead-units kind is on trust, restarted."""
    policy = make(max_restarts=2, restart_trust=2)
    policy.add("t", {"lr": 0.1}, seed_key=4)
    seeds = []
    for attempt in (1, 2):
        _, decision = feed(policy, "t", at_chance, 30, dead_frac=0.95)
        assert decision.action == RESTART and decision.verdict.kind == "dead_relu"
        assert decision.attempt == attempt and decision.seed == derive_seed(7, 4, attempt)
        seeds.append(decision.seed)
    _, decision = feed(policy, "t", at_chance, 30, dead_frac=0.95)
    assert decision.action == PRUNE and "not restarted: its 2 restart(s) used" in decision.reason
    lineage = policy.lineage("t")
    assert [r.attempt for r in lineage] == [0, 1, 2] and [r.seed for r in lineage[1:]] == seeds
    assert lineage[0].outcome == "restarted: stuck" and lineage[1].outcome == "restarted: dead_units"
    assert [r.kind for r in lineage] == [None, "dead_units", "dead_units"]
    assert policy.restart_epochs == lineage[1].epochs + lineage[2].epochs


def test_the_collapsed_end_to_end_trial_is_restarted_once_it_sits_at_chance_for_a_window():
    policy = make(max_restarts=1)
    policy.complete("other", 0.97)  # even with a leader far above, the collapse is restarted
    decisions = [
        policy.observe("t", epoch, loss, acc, grad_norm=0.2, dead_frac=dead)
        for epoch, (loss, acc, dead) in enumerate(COLLAPSING, start=1)
    ]
    restart_at = next(e for e, d in enumerate(decisions, start=1) if d.action != CONTINUE)
    decision = decisions[restart_at - 1]
    assert decision.action == RESTART and restart_at == 7  # chance since epoch 3: a full window
    assert decision.reason.startswith("stuck: collapsed") and decision.attempt == 1
    assert policy.lineage("t")[0].outcome == "restarted: stuck (collapsed)"
    assert policy.lineage("t")[1].reason == decision.reason


# The same configuration recorded on another machine (Ray 2.60, torch 2.14): it reaches chance
# only at epoch 6, after bouncing; epochs 9 and 10 repeat chance.
LATE_COLLAPSE = [
    (1.3729, 0.6844, 0.03),
    (5.1729, 0.3467, 0.23),
    (2.4771, 0.1889, 0.66),
    (8.7362, 0.2933, 0.64),
    (1.9376, 0.2422, 0.55),
    (2.3617, 0.1, 0.72),
    (2.3071, 0.1, 0.72),
    (2.3037, 0.1022, 0.72),
    (2.3030, 0.1, 0.72),
    (2.3029, 0.1, 0.72),
]


def test_a_collapse_under_way_is_held_until_its_window_decides_whatever_the_leader():
    """Back at chance from epoch 6: with a leader at 0.97 the extrapolation would prune it at
    epoch 8 (predicted worse); it is held instead and restarted at epoch 10 (a full window at
    chance), the same decision as without a leader. Without a restart left, nothing is held."""
    for leader in (None, 0.97):
        policy = make(max_restarts=1)
        if leader is not None:
            policy.complete("other", leader)
        decisions = [
            policy.observe("t", epoch, loss, acc, grad_norm=0.2, dead_frac=dead)
            for epoch, (loss, acc, dead) in enumerate(LATE_COLLAPSE, start=1)
        ]
        held = decisions[5:9]  # epochs 6 to 9
        assert all(d.action == CONTINUE for d in held)
        assert all(d.reason.startswith("back at chance after reaching 0.684") for d in held)
        assert decisions[9].action == RESTART and decisions[9].reason.startswith("stuck: collapsed")
    policy = make(max_restarts=0)
    policy.complete("other", 0.97)
    epoch, decision = feed(policy, "t", lambda e: LATE_COLLAPSE[e - 1][:2], len(LATE_COLLAPSE))
    assert decision.action == PRUNE and epoch <= 8


def test_a_trial_that_never_learned_did_not_collapse():
    policy = make(restart_trust=0)
    policy.complete("other", 0.97)
    rows = [(2.31, 0.25, 0.0), (2.3, 0.11, 0.0), *[(2.3026, 0.1, 0.0)] * 8]
    actions = [
        policy.observe("t", e, loss, acc, dead_frac=d).action for e, (loss, acc, d) in enumerate(rows, 1)
    ]
    assert RESTART not in actions and PRUNE in actions


def test_each_kind_of_failure_restarts_as_far_as_its_own_restarts_paid():
    """Two dead-ReLU restarts on trust end well (paid): dead units keep restarting. The stuck
    kind's own record is separate: its trusted restart did not pay, so it stops."""
    policy = make(restart_trust=2, restart_success=0.5)
    for i in range(3):
        _, decision = feed(policy, f"dead{i}", at_chance, 30, dead_frac=0.95)
        assert decision.action == RESTART
        trusted = f"dead_units restart {i + 1} of 2 on trust"
        assert decision.reason.endswith(trusted if i < 2 else "dead_units restarts paid 2 of 2 (needs 50%)")
        feed(policy, f"dead{i}", good, 3)
        policy.complete(f"dead{i}", 0.9)
    record = policy.restarts.state_dict()
    assert record["finished"] == {"dead_units": 3} and record["paid"] == {"dead_units": 3}
    for name in ("plain0", "plain1"):
        _, decision = feed(policy, name, at_chance, 30)
        assert decision.action == RESTART and decision.verdict.kind == "chance"
        feed(policy, name, at_chance, 30)  # cut where its first attempt ended: did not pay
        policy.complete(name, 0.1, "pruned")
    _, decision = feed(policy, "plain2", at_chance, 30)
    assert decision.action == PRUNE and "stuck restarts paid only 0 of 2" in decision.reason
    _, decision = feed(policy, "dead3", at_chance, 30, dead_frac=0.95)
    assert decision.action == RESTART


def test_a_restart_that_ran_its_course_better_paid_one_cut_or_no_better_did_not():
    policy = make(restart_trust=3)
    for name, then, final, outcome in (
        ("a", good, 0.9, "completed"),
        ("b", good, 0.9, "pruned"),
        ("c", good, 0.11, "converged"),
    ):
        feed(policy, name, at_chance, 30, dead_frac=0.95)
        feed(policy, name, then, 2)
        policy.complete(name, final, outcome)
    assert policy.restarts.state_dict()["paid"] == {"dead_units": 1}
    assert policy.restarts.state_dict()["finished"] == {"dead_units": 3}


def test_a_trial_cut_by_a_rank_rule_restarts_by_the_kind_its_last_epoch_shows():
    rungs = AshaRungs(grace_period=1, reduction_factor=3, max_t=30)
    policy = make(rules=[rungs], restart_trust=1)
    for i in range(6):
        policy.observe(f"ok{i}", 1, 1.0, 0.8 + i / 100)
    dead = policy.observe("dead", 1, 2.3, 0.1, dead_frac=0.97)
    assert dead.action == RESTART and dead.reason == (
        "rank rule: below its rung at epoch 1; dead_units restart 1 of 1 on trust"
    )
    assert policy.lineage("dead")[0].outcome == "restarted: dead_units"
    low = policy.observe("low", 1, 1.5, 0.5)  # ranked low at epoch 1: no sign of a local minimum yet
    assert low.action == PRUNE and low.reason == "rank rule: below its rung at epoch 1"
    again = policy.observe("dead", 1, 2.3, 0.11, dead_frac=0.9)  # no better where attempt 0 ended
    assert again.action == PRUNE and again.reason.startswith("restart did not pay: 0.11 at epoch 1")
    assert again.reason.endswith("not restarted: its 1 restart(s) used")
    assert decision_text(again) == "pruned: restart did not pay"


def test_the_sweep_wide_restart_budget_is_respected():
    policy = make(restart_budget=0.001, total_epochs=5000)  # 5 epochs of restarts in all
    _, first = feed(policy, "a", at_chance, 30, dead_frac=0.95)
    assert first.action == RESTART
    feed(policy, "a", at_chance, 30, dead_frac=0.95)  # attempt 1 spends the budget
    _, other = feed(policy, "b", at_chance, 30, dead_frac=0.95)
    assert other.action == PRUNE and not policy.restart_budget_left()


def test_a_plateau_far_below_the_leader_is_pruned_or_stopped():
    pruning = make(restart_trust=0)
    pruning.complete("best", 0.97)
    _, decision = feed(pruning, "low", low_plateau, 30)
    assert decision.action == PRUNE and decision.verdict.status == "predicted_worse"
    policy = make(prune_predicted_worse=False, restart_trust=0)
    policy.complete("best", 0.97)
    _, decision = feed(policy, "low", low_plateau, 30)
    assert decision.action == STOP and decision.verdict.status == "plateau_bad"
    assert (
        decision.reason.endswith("not restarted: 0 local_minimum restart(s) still running, none finished")
        is False
    )
    restarting = make(prune_predicted_worse=False, restart_trust=1)
    restarting.complete("best", 0.97)
    _, decision = feed(restarting, "low", low_plateau, 30)
    assert decision.action == RESTART and decision.verdict.status == "plateau_bad"
    assert decision.reason.endswith("local_minimum restart 1 of 1 on trust")


def test_the_leader_is_the_best_value_of_the_other_trials():
    policy = make()
    assert policy.leader() is None
    policy.observe("a", 1, 1.0, 0.6)
    policy.observe("b", 1, 1.0, 0.8)
    policy.observe("a", 2, 1.0, 0.9)
    policy.observe("c", 1, 1.0, math.nan)  # never a leader
    assert policy.leader() == 0.9 and policy.leader("a") == 0.8 and policy.leader("b") == 0.9
    low = ConvergencePolicy(PolicyConfig(mode="min"), budget=10)
    low.observe("a", 1, 1.0, 0.5)
    low.observe("b", 1, 1.0, 0.2)
    assert low.leader("b") == 0.5 and low.leader("a") == 0.2


def test_a_converged_contender_runs_to_the_budget_and_others_stop():
    policy = make()
    policy.complete("best", 0.97)
    _, decision = feed(policy, "near", good, 30)  # converges at ~0.97: within contender_margin
    assert decision.action == CONTINUE and "contender" in decision.reason
    lower = make()
    lower.complete("best", 0.99)
    epoch, decision = feed(lower, "below", good, 30)
    assert decision.action == STOP and epoch < 30


def test_a_converged_trial_close_to_its_budget_runs_on():
    stopping = make(stop_min_left=0.25)
    epoch, decision = feed(stopping, "a", good, 30)
    assert decision.action == STOP and 30 - epoch >= 0.25 * 30
    finishing = make(stop_min_left=1.0)  # every converged trial is "close to its budget"
    epoch, decision = feed(finishing, "a", good, 30)
    assert decision.action == CONTINUE and epoch == 30
    assert decision.verdict.status == "converged" and "close to its budget" in decision.reason


def test_completed_trials_set_the_best_and_pruned_ones_do_not():
    policy = make()
    policy.complete("a", 0.9)
    policy.complete("b", 0.99, outcome="pruned")
    policy.complete("c", math.nan)
    assert policy.best == 0.9
    policy.complete("d", 0.95, outcome="converged")
    policy.complete("d", 0.99)  # a trial completes once
    assert policy.best == 0.95


def test_remedies_change_the_config_and_are_recorded():
    policy = make(remedy_leaky_relu=True)
    policy.add("t", {"activation": "relu", "lr": 0.1})
    _, decision = feed(policy, "t", at_chance, 30, dead_frac=1.0)
    assert decision.action == RESTART and decision.verdict.kind == "dead_relu"
    assert decision.changes == {"activation": "leaky_relu"}
    assert policy.trials["t"].params["activation"] == "leaky_relu"


def test_an_oscillating_trial_far_below_the_leader_is_pruned():
    def swinging(t):
        return 1.0 + 0.5 * (t % 2), 0.6 if t % 2 else 0.3

    policy = make()
    policy.observe("leader", 1, 0.1, 0.95)
    _, decision = feed(policy, "osc", swinging, 30)
    assert decision.action == PRUNE and decision.verdict.status == "oscillating"
    assert "far below the leader" in decision.reason


def test_state_round_trips_through_json_and_gives_the_same_decisions():
    policy = make(rules=[AshaRungs(1, 3, 30)])
    feed(policy, "a", good, 4)
    feed(policy, "b", at_chance, 30)
    feed(policy, "c", at_chance, 30, dead_frac=0.95)
    policy.complete("z", 0.93)
    state = json.loads(json.dumps(policy.state_dict()))
    copy = make(rules=[AshaRungs(1, 3, 30)])
    copy.load_state_dict(state)
    assert json.dumps(copy.state_dict()) == json.dumps(policy.state_dict())
    assert copy.leaders == policy.leaders and copy.restarts == policy.restarts
    for epoch in range(5, 30):
        loss, acc = good(epoch)
        assert copy.observe("a", epoch, loss, acc) == policy.observe("a", epoch, loss, acc)
    with pytest.raises(ValueError, match="version"):
        copy.load_state_dict({**state, "version": 99})


# A sweep whose state holds every part: rungs with their loss guards on epochs and on seconds,
# a dead-ReLU restart, a finished trial. tests/data/policy_state_v2.json is its state as saved
# by the policy before rules were composed as a list (version 2).
SCENARIO_SETTINGS = {
    "inner": "asha",
    "grace_period": 1,
    "reduction_factor": 3.0,
    "loss_guard": True,
    "cost_rungs": True,
    "cost_calibration": 2,
}


def scenario_policy():
    return policy_from_settings(
        SCENARIO_SETTINGS, mode="max", chance=0.1, budget=30, total_epochs=3000, sweep_seed=7
    )


def run_scenario(policy):
    policy.add("e", {"lr": 0.1, "activation": "relu"}, seed_key=4)
    for epoch in range(1, 31):
        decision = policy.observe("e", epoch, 2.3026, 0.1, grad_norm=0.5, dead_frac=0.95, seconds=1.0)
        if decision.action != CONTINUE:
            break
    assert decision.action == RESTART, decision
    for i, tid in enumerate(("a", "b", "c", "d")):
        for epoch in range(1, 5):
            loss = 2.0 * math.exp(-epoch / (2 + i)) + 0.1 * i
            acc = 0.95 - 0.1 * i - 0.8 * math.exp(-epoch / (2 + i))
            seconds = 5.0 if epoch == 1 else 1.0 + i
            policy.observe(tid, epoch, loss, acc, grad_norm=0.5, dead_frac=0.0, seconds=seconds)
    policy.complete("a", 0.93)
    for epoch in (1, 2):
        policy.observe("e", epoch, 1.5 / epoch, 0.5 + 0.1 * epoch, seconds=1.0)


def test_a_state_saved_before_rules_were_a_list_loads_as_the_same_state():
    """Version 2 (saved by the policy of its day from the scenario above) reads as version 6: its
    rule slots become the list of rules in their order, its trials and references stay, and what
    it did not keep starts empty (the restart record per kind, each attempt's kind, the scale,
    the rungs' values by trial)."""
    old = json.loads((Path(__file__).parent / "data" / "policy_state_v2.json").read_text())
    assert old["version"] == 2 and old["cost_loss_inner"] is not None
    restored = scenario_policy()
    restored.load_state_dict(old)
    trials = json.loads(json.dumps(old["trials"]))
    for trial in trials.values():
        for record in trial["lineage"]:
            record["kind"] = None
    assert json.loads(json.dumps(restored.state_dict())) == {
        "version": STATE_VERSION,
        **{key: old[key] for key in ("best", "leaders", "epochs", "restart_epochs")},
        "restarts": {"started": {}, "finished": {}, "paid": {}},
        "trials": trials,
        "rules": [
            {"rule": no_values(old["inner"]), "guard": no_values(old["loss_inner"])},
            {"rule": no_values(old["cost_inner"]), "guard": no_values(old["cost_loss_inner"])},
        ],
        "scale": {"openings": {}, "unit": 1.0},
        "pauses": {},
    }
    assert STATE_VERSION == 7
    live = scenario_policy()  # it decides as a policy of today that saw the same epochs
    run_scenario(live)
    for tid in ("b", "c"):
        epoch = live.trials[tid].epoch + 1
        numbers = (tid, epoch, 0.5, 0.6)
        assert restored.observe(*numbers, seconds=2.0) == live.observe(*numbers, seconds=2.0)


def no_values(rule_state):
    """A rung state (or a compute rule's) as read from before version 6: no values by trial."""
    if "rungs" in rule_state:
        return {**rule_state, "rungs": no_values(rule_state["rungs"])}
    return {**rule_state, "values": {r: {} for r in rule_state["recorded"]}}


def test_a_version_5_state_loads_with_its_cutoffs_and_no_evidence_yet():
    """Version 5 kept the rungs' values without their trials: read as version 6, the cutoffs and
    everything else stay, the adaptive rungs' evidence starts again (their prior share)."""
    live = scenario_policy()
    run_scenario(live)
    new = json.loads(json.dumps(live.state_dict()))
    assert new["version"] == 7 and new["rules"][0]["rule"]["values"]["1"]
    new["pauses"] = {}  # version 5 knew no pauses
    old = {**new, "version": 5, "rules": json.loads(json.dumps(new["rules"]))}
    del old["pauses"]
    for rule in old["rules"]:
        for part in (rule["rule"], rule["guard"]):
            del (part["rungs"] if "rungs" in part else part)["values"]
    restored = scenario_policy()
    restored.load_state_dict(old)
    expected = {**new, "rules": [{k: no_values(v) for k, v in r.items()} for r in new["rules"]]}
    assert json.loads(json.dumps(restored.state_dict())) == expected
    numbers = ("b", live.trials["b"].epoch + 1, 0.5, 0.6)
    assert restored.observe(*numbers, seconds=2.0) == live.observe(*numbers, seconds=2.0)


def bank_values(name, epochs=(1, 3), count=60):
    """val_acc at ``epochs`` of the first ``count`` seed-0 runs of a shipped curve bank, by key."""
    path = CURVES / name
    if not path.exists():
        pytest.skip(f"curve bank {path} is missing")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        runs = [json.loads(line) for line in handle]
    runs = [r for r in runs if r["seed"] == runs[0]["seed"]][:count]
    return {f"c{r['config_id']}": [r["val_acc"][e - 1] for e in epochs] for r in runs}


@pytest.mark.parametrize(
    "bank, held",
    [("mnist1d.jsonl.gz", True), ("lcbench/lcbench-126026.jsonl.gz", False)],
)
def test_adaptive_rungs_cut_harder_only_where_early_ranks_held_on_real_curves(bank, held):
    """On mnist1d epoch-1 accuracy ranks the epoch-3 leaders (AUC > 0.8): rung 1 keeps only
    1/3**1.5; on LCBench 126026 it does not (AUC ~0.5): rung 1 keeps 1/3, as ASHA. Before 12
    trials reached epoch 3 both keep 1/3; the last rung (nothing later) always does."""
    values = bank_values(bank)
    rule = AshaRungs(1, 3, 30, adaptive=True)
    for n, (key, (first, third)) in enumerate(values.items()):
        if n == 11:
            assert rule.rung_keep(1).keep == pytest.approx(1 / 3) and rule.rung_keep(1).auc is None
        rule.prune(Reading(key, 1, 0.0, first, 0.0))
        rule.prune(Reading(key, 3, 0.0, third, 0.0))
    evidence = rule.rung_keep(1)
    auc = rank_auc({k: v[0] for k, v in values.items()}, {k: v[1] for k, v in values.items()}, 1 / 3)
    assert (evidence.reference, evidence.trials, evidence.auc) == (3, 60, pytest.approx(auc))
    assert (auc >= TRUSTED_AUC) == held and (auc <= 0.55) != held
    assert evidence.keep == pytest.approx(3**-1.5 if held else 1 / 3, abs=0.02)
    assert rule.rung_keep(27).keep == pytest.approx(1 / 3)
    plain = AshaRungs(1, 3, 30)  # not adaptive: ASHA's share, no evidence in the reason
    for key, (first, _) in values.items():
        plain.prune(Reading(key, 1, 0.0, first, 0.0))
    assert plain.rung_keep(1).keep == pytest.approx(1 / 3) and plain.explain() == ""


def test_a_rank_cut_gives_its_evidence_and_the_table_its_place():
    """The reason of an adaptive rung's cut says what its share rests on after "; "; the
    decision text keeps only where it cut."""
    rule = AshaRungs(1, 3, 30, adaptive=True)
    for key, (first, third) in bank_values("mnist1d.jsonl.gz").items():
        rule.prune(Reading(key, 1, 0.0, first, 0.0))
        rule.prune(Reading(key, 3, 0.0, third, 0.0))
    policy = ConvergencePolicy(PolicyConfig(), budget=30, rules=[rule])
    decision = policy.observe("low", 1, 2.3, min(rule.recorded[1]) - 0.01)
    auc = rule.rung_keep(1).auc
    assert decision.action == PRUNE and decision.reason == (
        f"rank rule: below its rung at epoch 1; epoch-1 ranks held at epoch 3 (AUC {auc:.2f}, "
        "60 trials): keep top 19%"
    )
    assert decision_text(decision) == "pruned: rank rule at epoch 1"


def test_rank_auc_counts_ties_as_half_and_nan_as_worst():
    later = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}  # leader (top 1/3 of 4 -> 2): a, b
    assert rank_auc({"a": 4, "b": 3, "c": 2, "d": 1}, later, 1 / 3) == 1.0
    assert rank_auc({"a": 1, "b": 2, "c": 3, "d": 4}, later, 1 / 3) == 0.0
    assert rank_auc({"a": 1, "b": 1, "c": 1, "d": 1}, later, 1 / 3) == 0.5
    assert rank_auc({"a": math.nan, "b": 3, "c": 2, "d": 1}, later, 1 / 3) == 0.5
    assert rank_auc({"a": 1.0}, later, 1 / 3) is None  # one shared trial: nothing to rank


def test_a_state_is_refused_by_a_policy_with_other_rules():
    policy = make(rules=[AshaRungs(1, 3, 30)])
    feed(policy, "a", good, 3)
    with pytest.raises(ValueError, match="1 rank rule"):
        make().load_state_dict(policy.state_dict())


def test_a_guarded_rule_records_both_values_and_cuts_only_when_both_would():
    rule = GuardedRule(AshaRungs(1, 3, 30), guard=AshaRungs(1, 3, 30, keep=1 / 9))
    assert rule.settled == 9  # reduction_factor**2 values settle a rung
    for key, value, neg_loss in (("a", 0.7, -0.7), ("b", 0.8, -0.6), ("c", 0.9, -0.5)):  # each the best
        assert not rule.prune(Reading(key, 1, 0.0, value, neg_loss))
    assert rule.rule.recorded[1] == [0.7, 0.8, 0.9] and rule.guard.recorded[1] == [-0.7, -0.6, -0.5]
    assert rule.prune(Reading("early", 1, 0.0, 0.1, -0.1))  # best loss among 3: the guard does not speak
    assert rule.last_peers == 3
    for i in range(5):
        rule.prune(Reading(f"x{i}", 1, 0.0, 0.5, -0.8))
    assert not rule.prune(Reading("spared", 1, 0.0, 0.1, -0.1))  # lowest metric, best loss of 9
    assert rule.prune(Reading("cut", 1, 0.0, 0.1, -0.9))
    assert rule.guard.recorded[1][0] == -0.9 and ("cut", 1) in rule.guard.seen
    with pytest.raises(ValueError, match="clock"):
        GuardedRule(AshaRungs(1, 3, 30), guard=CostRungs(1, 3, 30))


def test_inner_rank_rule_prunes_when_the_curve_says_nothing():
    policy = ConvergencePolicy(PolicyConfig(chance=0.1), budget=30, rules=[AshaRungs(1, 2, 30)])
    for tid, level in (("a", 0.9), ("b", 0.8)):
        policy.observe(tid, 1, 1.0, level)
    decision = policy.observe("c", 1, 1.5, 0.3)
    assert decision.action == PRUNE and "rank rule" in decision.reason


def test_decision_text_says_what_was_done_not_the_verdict():
    rank = ConvergencePolicy(PolicyConfig(chance=0.1), budget=30, rules=[AshaRungs(1, 2, 30)])
    assert decision_text(rank.observe("a", 1, 1.0, 0.9)) == "running"
    rank.observe("b", 1, 1.0, 0.8)
    cut = rank.observe("c", 1, 1.5, 0.3)
    assert cut.verdict.status == "progressing"  # the curve's diagnosis; the decision was prune
    assert decision_text(cut) == "pruned: rank rule at epoch 1"
    _, diverged = feed(make(), "a", lambda t: (math.nan if t >= 3 else 2.0, 0.1), 30)
    assert decision_text(diverged) == "pruned: diverged at epoch 3"
    _, converged = feed(make(), "a", good, 30)
    assert decision_text(converged) == f"stopped: converged at epoch {converged.verdict.step}"
    _, restart = feed(make(max_restarts=1), "t", at_chance, 30, dead_frac=0.95)
    assert decision_text(restart) == "restarted (attempt 1): stuck"
    _, stuck = feed(make(restart_trust=0), "t", at_chance, 30)
    assert decision_text(stuck) == "pruned: stuck" and decision_text(None) == "running"
    last = Decision(CONTINUE, "progressing at epoch 30", converged.verdict)
    assert decision_text(last, budget_done=True) == "completed"  # its whole budget trained
    assert decision_text(stuck, budget_done=True) == "pruned: stuck"


def test_decision_text_is_short():
    timed = Decision(PRUNE, "rank rule: below its rung at 12.5 s of training (epoch 2)")
    assert decision_text(timed) == "pruned: rank rule at 12.5 s (epoch 2)"
    long = Decision(STOP, "x" * 100 + ": details")
    assert decision_text(long) == "stopped: " + "x" * 28 + "..."  # 40 in all
    assert len(decision_text(long, width=20)) == 20 and decision_text(long, width=20).endswith("...")


def test_the_loss_rule_spares_a_trial_whose_loss_leads():
    def policy():
        return ConvergencePolicy(
            PolicyConfig(chance=0.1),
            budget=30,
            rules=[GuardedRule(AshaRungs(1, 3, 30), guard=AshaRungs(1, 3, 30, keep=1 / 9))],
        )

    spared, cut = policy(), policy()
    for p in (spared, cut):
        for i in range(9):  # the rung's settled count: the loss guard speaks from here on
            p.observe(f"t{i}", 1, 0.9 + 0.05 * i, 0.6 - 0.01 * i)
    assert spared.observe("late", 1, 0.4, 0.3).action == CONTINUE  # lowest loss of the rung
    assert cut.observe("late", 1, 1.5, 0.3).action == PRUNE


def test_the_curve_spares_a_trial_whose_optimistic_end_could_beat_the_leader():
    def rising(t):  # below the rung at epoch 9, but heading far above the leader
        return 2.0 / t, 0.3 + 0.06 * t

    def slow(t):  # below the rung and heading nowhere near the leader
        return 1.5 - 0.01 * t, 0.5 + 0.01 * t

    for curve, spared in ((rising, True), (slow, False)):
        policy = ConvergencePolicy(PolicyConfig(chance=0.1), budget=30, rules=[AshaRungs(9, 3, 30)])
        policy.observe("leader", 9, 0.3, 0.9)  # the leader, and the rung at epoch 9 holds 0.9
        actions = [policy.observe("t", e, *curve(e)).action for e in range(1, 10)]
        assert (actions == [CONTINUE] * 9) == spared, (curve.__name__, actions)
        assert spared or actions[-1] == PRUNE


def test_a_restarted_attempt_meets_the_rungs_again():
    rule = AshaRungs(9, 3, 30)
    policy = make(rules=[rule], max_restarts=1)
    _, decision = feed(policy, "t", at_chance, 30, dead_frac=0.95)  # restarted before the rung
    assert decision.action == RESTART and decision.attempt == 1
    feed(policy, "t", good, 9)
    assert ("t#1", 9) in rule.seen and ("t", 9) not in rule.seen


def test_compute_rungs_prune_a_slow_trial_that_the_epoch_rungs_keep():
    def policy():
        return ConvergencePolicy(
            PolicyConfig(chance=0.1),
            budget=30,
            rules=[AshaRungs(1, 3, 30), CostRungs(1, 3, 30, calibration=2)],
        )

    p = policy()
    for epoch, (a, b) in enumerate(((0.5, 0.6), (0.6, 0.7), (0.7, 0.75), (0.8, 0.85)), start=1):
        p.observe("a", epoch, 1.0, a, seconds=9.0 if epoch == 1 else 1.0)  # start-up, then 1 s/epoch
        p.observe("b", epoch, 1.0, b, seconds=9.0 if epoch == 1 else 1.0)
    assert p.rules[1].unit == 1.0 and p.trials["a"].cost == 3.0, "the first epoch is not counted"
    assert p.observe("slow", 1, 1.0, 0.65, seconds=9.0).action == CONTINUE
    # Its second epoch takes 3 s: best of the epoch-3 rung later, but now below what a and b
    # had after 3 s of training.
    decision = p.observe("slow", 2, 1.0, 0.72, seconds=3.0)
    assert decision.action == PRUNE and "3 s of training (epoch 2)" in decision.reason
    p2 = policy()
    for epoch in (1, 2):
        for tid in ("a", "b"):
            p2.observe(tid, epoch, 1.0, 0.5, seconds=1.0)
    p2.observe("fast", 1, 1.0, 0.7, seconds=1.0)
    assert p2.observe("fast", 2, 1.0, 0.7, seconds=0.5).action == CONTINUE  # not at a compute rung yet
    copy = policy()
    copy.load_state_dict(json.loads(json.dumps(p.state_dict())))
    assert copy.trials["slow"].cost == 3.0 and copy.rules[1].unit == 1.0
    assert copy.rules[1].state_dict() == p.rules[1].state_dict()


def test_a_restart_starts_its_training_time_over():
    policy = make(max_restarts=1)
    _, decision = feed(policy, "t", at_chance, 30, dead_frac=0.95, seconds=2.0)
    assert decision.action == RESTART and policy.trials["t"].cost == 0.0
    for epoch in (1, 2):
        policy.observe("t", epoch, *good(epoch), seconds=2.0)
    assert policy.trials["t"].cost == 2.0


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
        ({"restart_success": -0.1}, "restart_success"),
        ({"restart_trust": -1}, "restart_trust"),
        ({"collapse_margin": 0.0}, "collapse_margin"),
        ({"stop_min_left": 1.5}, "stop_min_left"),
        ({"contender_margin": -0.01}, "contender_margin"),
        ({"remedy_lr_factor": 1.5}, "remedy_lr_factor"),
        ({"history": 3}, "history"),
    ],
)
def test_bad_policy_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**kw)


def test_unknown_threshold_is_named():
    with pytest.raises(SettingError, match="thresholds.windw: unknown threshold") as unknown:
        thresholds_from({"windw": 3})
    assert unknown.value.key == "thresholds.windw"
    with pytest.raises(SettingError) as bad:
        thresholds_from({"window": 1})
    assert (bad.value.key, bad.value.problem, bad.value.value) == (
        "thresholds.window",
        "must be int in [2, inf)",
        1,
    )
    assert str(bad.value) == "thresholds.window: must be int in [2, inf), got 1"
    assert thresholds_from({"window": 7}).window == 7


def test_the_settings_are_one_source_of_defaults_and_name_what_is_wrong():
    assert ConvergenceSettings().policy_config(mode="max", chance=None) == PolicyConfig()
    for kw, line in (
        ({"grace_period": 0}, "grace_period: must be >= 1, got 0"),
        ({"reduction_factor": 1.0}, "reduction_factor: must be > 1, got 1.0"),
        ({"inner": "hyperband"}, "inner: must be one of asha or null, got 'hyperband'"),
        ({"adaptive_rungs": "yes"}, "adaptive_rungs: must be true or false, got 'yes'"),
        ({"restart_budget": 2.0}, "restart_budget: must be in [0, 1], got 2.0"),
        ({"thresholds": {"dead_frac": 1.5}}, "thresholds.dead_frac: must be float in (0, 1], got 1.5"),
    ):
        with pytest.raises(SettingError) as error:
            ConvergenceSettings(**kw)
        assert str(error.value) == line
        assert line == f"{error.value.key}: {error.value.problem}, got {error.value.value!r}"


def test_policy_from_settings_builds_the_rules_and_names_unknown_keys():
    settings = {
        "max_restarts": 2,
        "inner": "asha",
        "grace_period": 1,
        "reduction_factor": 3.0,
        "loss_guard": True,
        "thresholds": {"window": 6},
    }
    policy = policy_from_settings(settings, mode="max", chance=0.1, budget=40, total_epochs=40 * 100)
    assert policy.config.max_restarts == 2 and policy.config.thresholds.window == 6
    (rule,) = policy.rules
    assert rule.rule.rungs == [1, 3, 9, 27] and rule.guard.keep == pytest.approx(1 / 9)
    small = policy_from_settings(settings, mode="max", chance=0.1, budget=40, total_epochs=40 * 3)
    assert small.rules == []  # 3 trials: no ranking worth the name
    bare = policy_from_settings({}, mode="min", chance=None, budget=10, total_epochs=None)
    assert bare.config == PolicyConfig(mode="min") and bare.config.thresholds == Thresholds()
    (default,) = bare.rules  # a missing key takes ConvergenceSettings' default: guarded ASHA rungs
    assert default.rule.rungs == [1, 3, 9] and default.guard.keep == pytest.approx(1 / 9)
    assert default.rule.adaptive and not default.guard.adaptive  # the guard's share stays fixed
    fixed = policy_from_settings(
        {"adaptive_rungs": False}, mode="min", chance=None, budget=10, total_epochs=None
    )
    assert not fixed.rules[0].rule.adaptive
    assert (
        policy_from_settings({"inner": None}, mode="min", chance=None, budget=10, total_epochs=None).rules
        == []
    )
    with pytest.raises(SettingError, match="max_restart: unknown scheduler setting"):
        policy_from_settings({"max_restart": 1}, mode="max", chance=None, budget=10, total_epochs=None)
    with pytest.raises(ValueError, match="inner"):
        policy_from_settings({"inner": "hyperband"}, mode="max", chance=None, budget=10, total_epochs=None)
    costly_settings = {**settings, "cost_rungs": True, "cost_calibration": 6}
    costly = policy_from_settings(costly_settings, mode="max", chance=0.1, budget=40, total_epochs=4000)
    epochs, seconds = costly.rules  # the epoch rungs first, then the compute rungs, each guarded
    assert (epochs.clock, seconds.clock) == ("epochs", "seconds") and isinstance(seconds.rule, CostRungs)
    assert seconds.rule.calibration == 6 and seconds.guard.keep == pytest.approx(1 / 9)
    assert len(policy.rules) == 1, "compute rungs are off by default"
    for bad in (0, 2.5, True, "4"):
        with pytest.raises(ValueError, match="cost_calibration: must be a whole number >= 1"):
            policy_from_settings({"cost_calibration": bad}, mode="max", chance=None, budget=9, total_epochs=9)


def test_a_cut_trial_not_better_than_chance_or_with_a_nan_metric_is_stuck_in_either_mode():
    from orchestrator.policy.restarts import LOW, STUCK_KIND, failure_kind
    from orchestrator.policy.trial import _Trial

    def kind(metric, sign, chance):
        trial = _Trial(8)
        trial.metric.append(metric)
        return failure_kind(trial, chance, Thresholds(), sign)

    assert kind(0.11, 1.0, 0.1) == STUCK_KIND  # accuracy at chance (within 0.02)
    assert kind(0.02, 1.0, 0.1) == STUCK_KIND  # worse than a guess: one rare class predicted
    assert kind(0.5, 1.0, 0.1) == LOW  # it learned
    assert kind(0.95, -1.0, 0.9) == STUCK_KIND  # an error rate worse than a guess's
    assert kind(0.5, -1.0, 0.9) == LOW
    assert kind(math.nan, 1.0, 0.1) == STUCK_KIND  # nothing to show it learned
    assert kind(0.02, 1.0, None) == LOW  # no chance level: nothing to compare with
