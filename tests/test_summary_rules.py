"""Which rules were active: the pure coverage, the scheduler's record of optional keys, the summary's line."""

from __future__ import annotations

import math
from types import SimpleNamespace

from ray.tune.experiment import Trial

from orchestrator.policy import PolicyConfig, coverage_line, policy_from_settings, rule_coverage
from orchestrator.policy.rungs import AshaRungs, CostRungs
from orchestrator.scheduler import ConvergenceScheduler
from orchestrator.summary import summarize


def test_rules_without_their_inputs_are_off_with_the_reason():
    active, off = rule_coverage(PolicyConfig(mode="min", chance=None), [AshaRungs(1, 3, 30)], {"grad_norm"})
    assert off == {
        "collapse": "no chance level",
        "dead_relu": "no dead_frac reported",
        "chance": "no chance level",
        "cost_rank": "cost_rungs is off",
        "prior": "scheduler.prior is not set",
    }
    assert active == [
        "divergence", "vanishing_grad", "no_progress", "predicted_worse", "plateau_bad",
        "oscillation", "converged", "rank", "pause", "restart",
    ]  # fmt: skip
    _, off = rule_coverage(PolicyConfig(mode="min", chance=None, pause=False), [], set(), prior=True)
    assert off["pause"] == "pause is off" and off["prior"].startswith("no rank rule")
    active, _ = rule_coverage(PolicyConfig(mode="min", chance=None), [AshaRungs(1, 3, 30)], set(), prior=True)
    assert "prior" in active


def test_settings_and_missing_seconds_turn_rules_off():
    config = PolicyConfig(chance=0.1, max_restarts=0, stop_converged=False, prune_predicted_worse=False)
    reported = {"grad_norm", "dead_frac"}
    active, off = rule_coverage(config, [AshaRungs(1, 3, 30), CostRungs(1, 3, 30, calibration=2)], reported)
    assert off == {
        "collapse": "max_restarts is 0",
        "predicted_worse": "prune_predicted_worse is off",
        "converged": "stop_converged is off",
        "cost_rank": "no time_this_iter_s reported",
        "prior": "scheduler.prior is not set",
        "restart": "max_restarts is 0",
    }
    assert "chance" in active and "dead_relu" in active and "rank" in active
    _, off = rule_coverage(PolicyConfig(chance=0.1), [], {"time_this_iter_s"})
    assert off["rank"].startswith("no rank rule") and off["cost_rank"] == "cost_rungs is off"
    assert coverage_line(["divergence"], {}) == "rules: divergence"


class Grid(list):
    def get_best_result(self, metric, mode, scope):
        raise RuntimeError("no best result in this test")


def test_the_summary_states_the_active_rules_and_the_off_ones_with_reasons(tmp_path):
    policy = policy_from_settings({}, mode="min", chance=None, budget=10, total_epochs=None, scale=None)
    scheduler = ConvergenceScheduler(policy, metric="val_mse", mode="min")
    results = []
    for i in range(2):
        trial = Trial("train", config={"lr": 0.1, "attempt": 0}, trial_id=f"t{i}", stub=True)
        scheduler.on_trial_add(None, trial)
        for epoch in range(1, 4):
            last = {"epoch": epoch, "val_mse": 300.0 / epoch, "val_loss": 300.0 / epoch, "attempt": 0}
            last |= {"time_this_iter_s": 1.0, "grad_norm": math.nan, "dead_frac": None, "trial_id": f"t{i}"}
            scheduler.on_trial_result(None, trial, last)
        results.append(SimpleNamespace(metrics=last, config=trial.config, path=str(tmp_path / f"t{i}")))
    assert scheduler.reported == {"time_this_iter_s"}  # a NaN or None diagnostic is not reported
    cfg = SimpleNamespace(name="mse", metric="val_mse", mode="min", trainable=SimpleNamespace(epochs=10))
    outcomes = SimpleNamespace(of=lambda tid: "COMPLETED")
    summary = summarize(cfg, Grid(results), str(tmp_path), 0.0, None, scheduler, outcomes)
    line = (
        "rules: divergence, no_progress, predicted_worse, plateau_bad, oscillation, converged, rank, "
        "pause, restart; off: collapse (no chance level), dead_relu (no dead_frac reported), "
        "vanishing_grad (no grad_norm reported), chance (no chance level), "
        "cost_rank (cost_rungs is off), prior (scheduler.prior is not set)"
    )
    assert summary.rules_line == line
    assert f"  {line}" in summary.render().splitlines()
    assert f"- {line}" in summary.markdown().splitlines()
    tags = summary.tags()
    assert (
        tags["rules"].startswith("divergence, no_progress")
        and "dead_relu (no dead_frac reported)" in tags["rules_off"]
    )
    state = scheduler.state_dict()
    copy = ConvergenceScheduler(
        policy_from_settings({}, mode="min", chance=None, budget=10, total_epochs=None, scale=None),
        mode="min",
    )
    copy.load_state_dict(state)
    assert copy.rules() == scheduler.rules()


def test_a_summary_without_the_convergence_scheduler_has_no_rules_line(tmp_path):
    cfg = SimpleNamespace(name="x", metric="val_acc", mode="max", trainable=SimpleNamespace(epochs=10))
    summary = summarize(
        cfg, Grid(), str(tmp_path), 0.0, None, None, SimpleNamespace(of=lambda t: "COMPLETED")
    )
    assert summary.rules_line is None and summary.tags() == {} and "rules:" not in summary.render()
