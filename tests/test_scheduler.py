"""The Ray adapter of the convergence policy, driven through Ray's TrialScheduler interface.

A small controller stands in for Tune's (the methods schedulers call); trials are real Ray
``Trial`` objects and the searcher is the real OptunaSearch subclass; no Ray cluster starts.
"""

import math

from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from orchestrator.callbacks import VerdictCallback
from orchestrator.policy import ConvergencePolicy, PolicyConfig
from orchestrator.scheduler import ConvergenceScheduler
from orchestrator.search import IndexedOptunaSearch
from orchestrator.seeding import derive_seed


class Controller:
    """What Tune's controller offers a scheduler: the trials, pause, stop, the searcher."""

    def __init__(self, searcher):
        self.trials = []
        self.search_alg = type("SearchGenerator", (), {"searcher": searcher})()

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return [t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)]

    def pause_trial(self, trial, should_checkpoint=True):
        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial):
        trial.set_status(Trial.TERMINATED)


def setup(**policy_kw):
    space = {
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "activation": CategoricalDistribution(["relu", "tanh"]),
    }
    searcher = IndexedOptunaSearch(space=space, metric="val_acc", mode="max", seed=0)
    controller = Controller(searcher)
    policy = ConvergencePolicy(
        PolicyConfig(chance=0.1, **policy_kw), budget=30, total_epochs=3000, sweep_seed=3
    )
    scheduler = ConvergenceScheduler(policy, metric="val_acc", mode="max")
    return searcher, controller, scheduler


def add_trial(searcher, controller, scheduler, trial_id, **fixed):
    config = {**searcher.suggest(trial_id), "epochs": 30, "attempt": 0, "run": {}, **fixed}
    trial = Trial("train", config=config, trial_id=trial_id, stub=True)
    controller.trials.append(trial)
    scheduler.on_trial_add(controller, trial)
    trial.set_status(Trial.RUNNING)
    return trial


def result(epoch, loss, acc, attempt=0, seed=1, dead=0.0):
    return {
        "epoch": epoch,
        "training_iteration": epoch,
        "val_loss": loss,
        "val_acc": acc,
        "train_loss": loss,
        "grad_norm": 0.5,
        "dead_frac": dead,
        "attempt": attempt,
        "seed": seed,
        "lr": 0.1,
    }


def run_until_decision(scheduler, controller, trial, curve, attempt=0, dead=0.0):
    for epoch in range(1, 31):
        loss, acc = curve(epoch)
        action = scheduler.on_trial_result(controller, trial, result(epoch, loss, acc, attempt, dead=dead))
        if action != TrialScheduler.CONTINUE:
            return epoch, action
    return 30, TrialScheduler.CONTINUE


def test_a_stuck_trial_restarts_in_place_with_a_new_seed_and_no_checkpoint():
    searcher, controller, scheduler = setup()
    trial = add_trial(searcher, controller, scheduler, "t0")
    index = trial.config["trial_index"]
    _, action = run_until_decision(scheduler, controller, trial, lambda t: (2.3026, 0.1), dead=0.95)
    assert action == TrialScheduler.NOOP
    assert trial.status == Trial.PAUSED
    assert trial.config["attempt"] == 1 and trial.config["seed"] == derive_seed(3, index, 1)
    assert trial.run_metadata.checkpoint_manager._latest_checkpoint_result is None
    assert scheduler.choose_trial_to_run(controller) is trial
    assert scheduler.decisions["t0"].verdict.status == "stuck"
    # a late result of attempt 0 is ignored; attempt 1 starts at epoch 1
    assert scheduler.on_trial_result(controller, trial, result(6, 2.3, 0.1, attempt=0)) == TrialScheduler.NOOP
    trial.set_status(Trial.RUNNING)
    assert (
        scheduler.on_trial_result(controller, trial, result(1, 2.0, 0.3, attempt=1))
        == TrialScheduler.CONTINUE
    )
    lineage = scheduler.policy.lineage("t0")
    assert [(r.attempt, r.epochs) for r in lineage] == [(0, lineage[0].epochs), (1, 1)]


def test_converged_trials_are_complete_in_optuna_with_their_value():
    searcher, controller, scheduler = setup()
    trial = add_trial(searcher, controller, scheduler, "good")

    def curve(t):
        return 2.0 * math.exp(-t / 2) + 0.08, 0.97 - 0.85 * math.exp(-t / 2)

    epoch, action = run_until_decision(scheduler, controller, trial, curve)
    assert action == TrialScheduler.STOP and epoch < 30
    searcher.on_trial_complete("good", result={"val_acc": curve(epoch)[1]})
    (frozen,) = searcher._ot_study.trials
    assert frozen.state == TrialState.COMPLETE and frozen.value == curve(epoch)[1]
    assert frozen.user_attrs["verdict"] == "converged"
    assert scheduler.policy.best == curve(epoch)[1]


def test_diverged_trials_fail_and_predicted_worse_ones_are_pruned_in_optuna():
    searcher, controller, scheduler = setup()
    bad = add_trial(searcher, controller, scheduler, "nan")
    _, action = run_until_decision(scheduler, controller, bad, lambda t: (math.nan if t > 2 else 2.0, 0.1))
    assert action == TrialScheduler.STOP
    searcher.on_trial_complete("nan", result={"val_acc": 0.1})
    scheduler.policy.complete("other", 0.97)
    slow = add_trial(searcher, controller, scheduler, "slow")
    _, action = run_until_decision(
        scheduler, controller, slow, lambda t: (1.0 * math.exp(-t / 2) + 1.2, 0.6 - 0.4 * math.exp(-t / 2))
    )
    assert action == TrialScheduler.STOP
    assert scheduler.decisions["slow"].verdict.status in ("predicted_worse", "plateau_bad")
    searcher.on_trial_complete("slow", result={"val_acc": 0.55})
    states = {t.number: t.state for t in searcher._ot_study.trials}
    assert states[0] == TrialState.FAIL
    assert states[1] in (TrialState.PRUNED, TrialState.COMPLETE)


def test_a_remedy_is_not_credited_to_the_old_values():
    searcher, controller, scheduler = setup(remedy_lr_factor=0.5)
    trial = add_trial(searcher, controller, scheduler, "osc", lr=0.2)
    scheduler.policy.trials["osc"].params["lr"] = 0.2
    decision_changes = {"lr": 0.1}
    scheduler._restart(
        controller,
        trial,
        type("D", (), {"attempt": 1, "seed": 5, "changes": decision_changes, "reason": "oscillating"})(),
    )
    assert trial.config["lr"] == 0.1 and trial.config["attempt"] == 1
    old = searcher._ot_study.trials[0]
    assert old.state == TrialState.PRUNED and "superseded_by" in old.user_attrs
    searcher.on_trial_complete("osc", result={"val_acc": 0.9})
    new = searcher._ot_study.trials[-1]
    assert new.state == TrialState.COMPLETE and new.params["lr"] == 0.1 and new.value == 0.9


def test_scheduler_state_saves_and_restores(tmp_path):
    searcher, controller, scheduler = setup()
    trial = add_trial(searcher, controller, scheduler, "t0")
    run_until_decision(scheduler, controller, trial, lambda t: (2.3026, 0.1), dead=0.95)
    path = scheduler.save_to_dir(str(tmp_path))
    _, _, fresh = setup()
    fresh.restore(path)
    assert fresh.state_dict() == scheduler.state_dict() or str(fresh.state_dict()) == str(
        scheduler.state_dict()
    )
    assert fresh.restarts == 1 and fresh.policy.lineage("t0")[-1].attempt == 1


def test_a_trial_stuck_at_chance_without_evidence_against_its_seed_is_pruned():
    searcher, controller, scheduler = setup(restart_trust=0)  # no restart on trust either
    trial = add_trial(searcher, controller, scheduler, "t0")
    _, action = run_until_decision(scheduler, controller, trial, lambda t: (2.3026, 0.1))
    assert action == TrialScheduler.STOP and scheduler.restarts == 0
    decision = scheduler.decisions["t0"]
    assert decision.action == "prune" and decision.verdict.status == "stuck"
    searcher.on_trial_complete("t0", result={"val_acc": 0.1})
    assert searcher._ot_study.trials[0].state == TrialState.PRUNED


def test_each_result_carries_the_verdict_and_the_decision_the_progress_table_shows():
    searcher, controller, scheduler = setup(restart_trust=0)
    trial = add_trial(searcher, controller, scheduler, "t0")
    callback = VerdictCallback(scheduler)
    first = result(1, 2.3026, 0.1)
    scheduler.on_trial_result(controller, trial, first)
    callback.on_trial_result(1, controller.trials, trial, first)
    assert first["decision"] == "running" and first["verdict"] == "progressing"
    epoch, _ = run_until_decision(scheduler, controller, trial, lambda t: (2.3026, 0.1))
    last = result(epoch, 2.3026, 0.1)
    callback.on_trial_result(epoch, controller.trials, trial, last)
    assert (last["verdict"], last["action"], last["decision"]) == ("stuck", "prune", "pruned: stuck")
    assert last["decision_reason"] == scheduler.decisions["t0"].reason
    healthy = add_trial(searcher, controller, scheduler, "t1", epochs=2)
    for epoch, acc in ((1, 0.5), (2, 0.6)):
        res = result(epoch, 1.0 / epoch, acc)
        scheduler.on_trial_result(controller, healthy, res)
        callback.on_trial_result(epoch, controller.trials, healthy, res)
        assert res["decision"] == ("running" if epoch == 1 else "completed")  # its last epoch


def test_paused_trials_run_first_then_pending_ones_in_the_order_they_were_added():
    searcher, controller, scheduler = setup()
    trials = [add_trial(searcher, controller, scheduler, f"t{i}") for i in range(5)]
    for t in trials:
        t.set_status(Trial.PENDING)
    trials[0].set_status(Trial.TERMINATED)
    controller.get_live_trials = lambda: set(controller.trials) - {trials[0]}  # Tune's live trials: a set
    assert scheduler.choose_trial_to_run(controller) is trials[1]
    trials[3].set_status(Trial.PAUSED)
    assert scheduler.choose_trial_to_run(controller) is trials[3]
    for t in trials[1:]:
        t.set_status(Trial.RUNNING)
    assert scheduler.choose_trial_to_run(controller) is None
    # a trial this scheduler never saw added (a restored sweep): the controller's order decides
    late = Trial("train", config={"epochs": 30, "attempt": 0}, trial_id="late", stub=True)
    controller.trials.insert(0, late)
    trials[4].set_status(Trial.PENDING)
    assert scheduler.choose_trial_to_run(controller) is late


def test_the_epoch_seconds_ray_reports_feed_the_compute_rungs():
    from orchestrator.policy import CostRungs

    searcher, controller, scheduler = setup()
    scheduler.policy.rules = [CostRungs(1, 3, 30, calibration=2)]
    trials = [add_trial(searcher, controller, scheduler, tid) for tid in ("a", "b", "slow")]
    for trial, acc in ((trials[0], 0.5), (trials[1], 0.6)):
        for epoch in (1, 2, 3, 4):
            answer = {**result(epoch, 1.0, acc + 0.1 * epoch), "time_this_iter_s": 1.0}
            assert scheduler.on_trial_result(controller, trial, answer) == TrialScheduler.CONTINUE
    assert scheduler.policy.rules[0].unit == 1.0 and scheduler.policy.trials["a"].cost == 3.0
    first = {**result(1, 1.0, 0.7), "time_this_iter_s": 1.0}
    assert scheduler.on_trial_result(controller, trials[2], first) == TrialScheduler.CONTINUE
    slow = {**result(2, 1.0, 0.75), "time_this_iter_s": 3.0}  # below a and b after 3 s (0.8, 0.9)
    assert scheduler.on_trial_result(controller, trials[2], slow) == TrialScheduler.STOP
    assert "s of training" in scheduler.decisions["slow"].reason
    searcher.on_trial_complete("slow", result={"val_acc": 0.65})
    assert {t.number: t.state for t in searcher._ot_study.trials}[2] == TrialState.PRUNED


def test_a_result_that_breaks_the_contract_stops_its_trial_before_the_policy_sees_it():
    """The first hop: no objective (or not a number) -> the trial stops as failed, Optuna is told
    FAIL, the policy records nothing for it, and the problem names the key and what was reported."""
    from orchestrator.outcomes import Outcomes

    searcher, controller, scheduler = setup()
    outcomes = Outcomes(30, scheduler)
    bad = add_trial(searcher, controller, scheduler, "bad")
    broken = {k: v for k, v in result(1, 2.3, 0.1).items() if k != "val_acc"}
    assert scheduler.on_trial_result(controller, bad, broken) == TrialScheduler.STOP
    problem = scheduler.problem("bad")
    assert problem.startswith("val_acc: the trial did not report it (reported: attempt, dead_frac, epoch")
    assert scheduler.decision("bad") is None and scheduler.policy.epochs == 0
    assert scheduler.all_broken()
    bad.update_last_result(broken)
    searcher.on_trial_complete("bad", broken)
    assert searcher._ot_study.trials[0].state == TrialState.FAIL
    assert outcomes.decide(bad, errored=False) == "ERROR"

    good = add_trial(searcher, controller, scheduler, "good")
    assert scheduler.on_trial_result(controller, good, result(1, 2.0, 0.4)) == TrialScheduler.CONTINUE
    assert not scheduler.all_broken()  # one trial kept the contract: the sweep goes on
    text = add_trial(searcher, controller, scheduler, "text")
    stringly = {**result(1, 2.0, 0.4), "val_loss": "2.0"}
    assert scheduler.on_trial_result(controller, text, stringly) == TrialScheduler.STOP
    assert scheduler.problem("text") == "val_loss: the trial reported '2.0', not a number"


def test_the_scheduler_refuses_a_mode_its_policy_does_not_rank_with():
    policy = ConvergencePolicy(PolicyConfig(mode="max"), budget=10)
    try:
        ConvergenceScheduler(policy, metric="val_acc", mode="min")
    except ValueError as exc:
        assert "mode" in str(exc) and "'max'" in str(exc)
    else:
        raise AssertionError("a disagreeing mode was accepted")
    scheduler = ConvergenceScheduler(policy, metric="val_acc")
    assert scheduler.set_search_properties("val_acc", "min") is False
    assert scheduler.set_search_properties("val_loss", "max") is False
    assert scheduler.set_search_properties("val_acc", "max") is True


def test_the_verdict_callback_takes_results_without_the_optional_keys():
    """``attempt`` and ``seed`` are filled in by the framework when it can: a result without them
    (or whose epoch is broken, stopped by the contract check) is annotated, never a KeyError."""
    from orchestrator.callbacks import VerdictCallback

    searcher, controller, scheduler = setup()
    trial = add_trial(searcher, controller, scheduler, "t0")
    callback = VerdictCallback(scheduler)
    plain = {k: v for k, v in result(1, 2.0, 0.4).items() if k not in ("attempt", "seed")}
    scheduler.on_trial_result(controller, trial, plain)
    callback.on_trial_result(0, [], trial, plain)
    assert plain["decision"] == "running" and plain["verdict"] == "progressing"
    broken = {**plain, "epoch": None}
    assert scheduler.on_trial_result(controller, trial, broken) == TrialScheduler.STOP
    callback.on_trial_result(0, [], trial, broken)
    assert scheduler.problem("t0").startswith("epoch: the trial reported None")
