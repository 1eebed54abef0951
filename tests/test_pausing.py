"""Freeze-thaw: a trial below its rung but not hopeless is paused with its checkpoint and resumes
later; the policy on plain numbers, then its Ray adapter through Tune's scheduler interface
(real ``Trial`` objects, a small stand-in controller; no Ray cluster starts)."""

import json

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from test_scheduler import Controller as TuneController

from orchestrator.policy import PAUSE, PRUNE, Reading, SettingError, decision_text, policy_from_settings
from orchestrator.scheduler import ConvergenceScheduler


def policy(**settings):
    """The default policy (rank rules in any sweep), accuracy with 10 classes, 30 epochs."""
    return policy_from_settings(settings, mode="max", chance=0.1, budget=30, total_epochs=None)


def first_epochs(p, values):
    """Epoch 1 of trials named by ``values`` (their losses rank as their accuracies do)."""
    return {tid: p.observe(tid, 1, 2.0 - acc, acc) for tid, acc in values.items()}


def test_a_trial_just_below_its_rung_is_paused_and_one_far_below_is_pruned():
    p = policy()
    decisions = first_epochs(p, {"a": 0.8, "b": 0.9, "c": 0.8, "d": 0.5})
    assert decisions["c"].action == PAUSE  # cutoff 0.867: 0.067 below, within 0.1
    assert decisions["c"].reason.startswith("rank rule: below its rung at epoch 1; 0.8 < cutoff 0.8667;")
    assert "paused, not pruned" in decisions["c"].reason
    assert decision_text(decisions["c"]) == "paused: rank rule at epoch 1"
    assert decisions["d"].action == PRUNE and "paused" not in decisions["d"].reason
    assert p.paused() == ["c"] and p.is_paused("c")
    record = p.pause_record("c")[0]
    assert (record.epoch, record.resumed, record.stopped) == (1, None, None)


def test_pause_off_or_a_trial_at_chance_is_never_paused():
    assert first_epochs(policy(pause=False), {"a": 0.8, "b": 0.9, "c": 0.8})["c"].action == PRUNE
    at_chance = first_epochs(policy(pause_margin=1.0), {"a": 0.8, "b": 0.9, "c": 0.1})["c"]
    assert at_chance.action != PAUSE  # stuck at chance: hopeless as it is (restarted or pruned)
    below = first_epochs(policy(pause_margin=1.0), {"a": 0.8, "b": 0.9, "c": 0.02})["c"]
    assert below.action != PAUSE  # worse than a guess (one rare class predicted): no better
    with pytest.raises(SettingError, match="pause_margin: must be >= 0"):
        policy(pause_margin=-0.1)
    with pytest.raises(SettingError, match="pause: must be true or false"):
        policy(pause="yes")


#: Nine values at epoch 1 (the rung's ``settled`` count): cutoff 0.847, each 0.5 pruned far below it.
SETTLED = {"a": 0.9, "b": 0.9, "d": 0.9, "e": 0.82} | {f"low{i}": 0.5 for i in range(5)}


def test_a_trial_cut_among_the_first_values_at_its_rung_resumes_only_at_the_end():
    p = policy()
    first_epochs(p, {"a": 0.8, "b": 0.9, "c": 0.8})  # cut among 2 values: the order of arrival
    assert p.is_paused("c") and p.pause_record("c")[0].reason.endswith(
        "within 0.1 of the cutoff (cut among 2 values, < 9: resumes at the end)"
    )
    first_epochs(p, {"f": 0.3, "g": 0.35, "h": 0.4})  # c would pass its rung now...
    assert p.rules[0].would_pass(Reading(**p.pause_record("c")[0].reading))
    assert p.promotable() == [] and p.paused() == ["c"]  # ...but is not promoted ahead of new ones


def test_a_paused_trial_is_promoted_when_later_values_lower_its_cutoff_and_continues_its_curve():
    p = policy()
    first_epochs(p, SETTLED)
    assert first_epochs(p, {"c": 0.8})["c"].action == PAUSE  # 0.047 below the cutoff of 9 values
    assert "resumes at the end" not in p.pause_record("c")[0].reason
    assert p.promotable() == []
    first_epochs(p, {"f": 0.3, "g": 0.35, "h": 0.4})  # pruned: far below
    assert p.promotable() == ["c"]
    p.resume("c", "promoted")
    assert not p.is_paused("c") and p.pause_record("c")[0].resumed == "promoted"
    assert p.observe("c", 2, 1.1, 0.85).action != PAUSE  # its epoch 2: the curve goes on
    assert p.trials["c"].epoch == 2 and list(p.trials["c"].metric) == [0.8, 0.85]


def test_a_paused_trial_no_longer_near_its_cutoff_is_stopped_with_where_it_paused():
    p = policy()
    first_epochs(p, {"a": 0.8, "b": 0.9, "c": 0.8})
    assert p.still_near("c")
    first_epochs(p, {f"x{i}": 0.95 for i in range(6)})  # the rung's cutoff rises to 0.95
    assert not p.still_near("c")
    decision = p.stop_paused("c", "it can no longer matter")
    assert decision.action == PRUNE
    assert decision.reason == "paused at epoch 1 and not resumed: it can no longer matter"
    assert p.lineage("c")[-1].outcome == "pruned" and not p.is_paused("c")


def test_pauses_are_saved_with_the_state_and_a_version_6_state_reads_with_none():
    p = policy()
    first_epochs(p, {"a": 0.8, "b": 0.9, "c": 0.8})
    state = json.loads(json.dumps(p.state_dict()))
    assert state["version"] == 7 and state["pauses"]["c"][0]["epoch"] == 1
    copy = policy()
    copy.load_state_dict(state)
    assert copy.paused() == ["c"] and copy.pause_record("c") == p.pause_record("c")
    old = {k: v for k, v in state.items() if k != "pauses"} | {"version": 6}
    older = policy()
    older.load_state_dict(old)
    assert older.paused() == [] and older.trials["c"].epoch == 1


# -- the Ray adapter ---------------------------------------------------------------------


class Controller(TuneController):
    """The stand-in controller of test_scheduler, with this test's scheduler and a searcher that may
    have finished; stopping a waiting trial removes it from the scheduler, as Tune does."""

    def __init__(self):
        super().__init__(searcher=None)
        self.finished = False
        self.search_alg = type("SearchGenerator", (), {"is_finished": lambda _: self.finished})()
        self.scheduler = ConvergenceScheduler(policy(), metric="val_acc", mode="max")

    def stop_trial(self, trial):
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        super().stop_trial(trial)


def with_two_leaders():
    """A controller whose scheduler has seen epoch 1 of two trials at 0.8 and 0.9."""
    c = Controller()
    for tid, acc in (("a", 0.8), ("b", 0.9)):
        epoch(c, tid, 1, acc)
    return c


def with_a_settled_rung():
    """:func:`with_two_leaders` and seven more trials at epoch 1 (0.9, 0.9, five at 0.5): nine
    values, the rung's ``settled`` count; its cutoff is 0.833."""
    c = with_two_leaders()
    for tid, acc in ({"d": 0.9, "e": 0.9} | {f"low{i}": 0.5 for i in range(5)}).items():
        epoch(c, tid, 1, acc)
    return c


def add(controller, trial_id, status=Trial.PENDING):
    trial = Trial("train", config={"epochs": 30, "attempt": 0}, trial_id=trial_id, stub=True)
    controller.trials.append(trial)
    controller.scheduler.on_trial_add(controller, trial)
    trial.set_status(status)
    return trial


def epoch(controller, trial_id, n, acc, *, checkpoint=True):
    """Report epoch ``n`` of ``trial_id`` (added first if new) and apply Tune's reaction."""
    trial = next((t for t in controller.trials if t.trial_id == trial_id), None) or add(controller, trial_id)
    trial.set_status(Trial.RUNNING)
    result = {"epoch": n, "training_iteration": n, "val_loss": 2.0 - acc, "val_acc": acc, "attempt": 0}
    action = controller.scheduler.on_trial_result(
        controller, trial, {**result, "should_checkpoint": checkpoint}
    )
    if action == TrialScheduler.PAUSE:
        trial.set_status(Trial.PAUSED)
    elif action == TrialScheduler.STOP:
        controller.stop_trial(trial)
    return action


def test_the_adapter_pauses_with_a_checkpoint_promotes_before_new_trials_and_resumes_at_the_end():
    c = with_a_settled_rung()
    scheduler = c.scheduler
    assert epoch(c, "p", 1, 0.8) == TrialScheduler.PAUSE
    assert epoch(c, "q", 1, 0.8, checkpoint=False) == TrialScheduler.STOP  # would resume elsewhere
    assert scheduler.decision("q").reason.endswith("not paused: no checkpoint of epoch 1 to resume from")
    assert scheduler.lineage("q")[-1].outcome == "pruned"
    add(c, "new")  # a pending trial...
    assert scheduler.choose_trial_to_run(c).trial_id == "new"  # ... runs before p, not promoted
    for tid, acc in (("f", 0.3), ("g", 0.35), ("h", 0.4)):
        epoch(c, tid, 1, acc)
    assert scheduler.choose_trial_to_run(c).trial_id == "p"  # promoted: passes its rung now
    assert scheduler.policy.pause_record("p")[0].resumed.startswith("promoted")
    assert epoch(c, "p", 2, 0.85) == TrialScheduler.CONTINUE  # resumes at epoch 2
    assert epoch(c, "s", 1, 0.75) == TrialScheduler.PAUSE  # a second paused trial...
    assert scheduler.choose_trial_to_run(c).trial_id == "new"  # ...waits behind new trials
    next(t for t in c.trials if t.trial_id == "new").set_status(Trial.TERMINATED)  # ran and ended
    assert scheduler.choose_trial_to_run(c) is None
    c.finished = True
    assert scheduler.choose_trial_to_run(c).trial_id == "s"  # most promising paused trial
    assert "no new configuration left" in scheduler.policy.pause_record("s")[0].resumed


def test_the_adapter_stops_a_paused_trial_that_can_no_longer_matter_and_one_left_when_the_sweep_ends():
    c = with_two_leaders()
    scheduler = c.scheduler
    assert epoch(c, "r", 1, 0.86) == TrialScheduler.PAUSE
    assert epoch(c, "p", 1, 0.8) == TrialScheduler.PAUSE
    for i in range(6):
        epoch(c, f"x{i}", 1, 0.95)  # the cutoff rises to 0.95: p is no longer near it, r is
    c.trials = [t for t in c.trials if t.trial_id in ("p", "r")]
    c.finished = True
    assert scheduler.choose_trial_to_run(c).trial_id == "r"
    p = next(t for t in c.trials if t.trial_id == "p")
    assert p.status == Trial.TERMINATED and scheduler.decision("p").action == PRUNE
    assert scheduler.decision("p").reason.startswith("paused at epoch 1 and not resumed: no new config")
    assert scheduler.lineage("p")[-1].outcome == "pruned"
    assert epoch(c, "z", 1, 0.86) == TrialScheduler.PAUSE
    c.stop_trial(c.trials[-1])  # the sweep ends (e.g. its time budget) while z is paused
    assert scheduler.decision("z").reason == "paused at epoch 1 and not resumed: the sweep ended first"
    assert scheduler.lineage("z")[-1].outcome == "pruned"


def test_a_resumed_sweeps_paused_trial_waits_paused_again_and_resumes_as_before():
    """Ray requeues a restored sweep's PAUSED trials as PENDING; the scheduler, its state restored
    first (SweepState), makes a paused one PAUSED again: new trials run before it."""
    c = with_two_leaders()
    assert epoch(c, "p", 1, 0.8) == TrialScheduler.PAUSE
    resumed = Controller()  # the resumed driver: state from the snapshot, then Ray re-adds the trials
    resumed.scheduler.load_state_dict(json.loads(json.dumps(c.scheduler.state_dict())))
    for tid in ("a", "b", "p", "new"):
        trial = Trial("train", config={"epochs": 30, "attempt": 0}, trial_id=tid, stub=True)
        resumed.trials.append(trial)
        resumed.scheduler.on_trial_add(resumed, trial)  # each PENDING, as Ray requeues them
    status = {t.trial_id: t.status for t in resumed.trials}
    assert status == {"a": Trial.PENDING, "b": Trial.PENDING, "p": Trial.PAUSED, "new": Trial.PENDING}
    for trial in resumed.trials[:2]:
        trial.set_status(Trial.TERMINATED)  # (a and b were running: they go on and end)
    assert resumed.scheduler.choose_trial_to_run(resumed).trial_id == "new"
    resumed.trials[-1].set_status(Trial.TERMINATED)
    resumed.finished = True
    assert resumed.scheduler.choose_trial_to_run(resumed).trial_id == "p"
    assert "no new configuration left" in resumed.scheduler.policy.pause_record("p")[0].resumed


def test_trials_checkpoint_at_the_rungs_only_where_a_pause_can_happen():
    import dataclasses

    from orchestrator.policy import ConvergenceSettings
    from orchestrator.schema import SweepConfig, TrainableConfig
    from orchestrator.trials import checkpoint_at, run_settings

    cfg = SweepConfig(trainable=TrainableConfig(epochs=20))
    assert checkpoint_at(cfg) == [1, 3, 9] == run_settings(cfg, "/tmp")["checkpoint_at"]
    assert checkpoint_at(dataclasses.replace(cfg, scheduler=ConvergenceSettings(pause=False))) == []
    costs = dataclasses.replace(cfg, scheduler=ConvergenceSettings(cost_rungs=True))
    assert checkpoint_at(costs) == list(range(1, 20))  # a compute rung may fall on any epoch
    two = [{"metric": "val_acc", "mode": "max"}, {"metric": "val_loss", "mode": "min"}]
    assert checkpoint_at(dataclasses.replace(cfg, objectives=two)) == []  # no rank rule: no pause


def test_the_result_files_of_a_resumed_trial_keep_the_drivers_own_rows(tmp_path, monkeypatch):
    """Ray's loggers copy a trial's file back from storage whenever it starts, a paused one
    resuming too; the driver's copy, once written, holds rows storage may not have yet."""
    from types import SimpleNamespace

    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from orchestrator.callbacks import CsvLogger, JsonLogger

    restored = []
    for base in (JsonLoggerCallback, CSVLoggerCallback):  # raises if Ray no longer has the hook
        monkeypatch.setattr(base, "_restore_from_remote", lambda self, name, trial: restored.append(name))
    trial = SimpleNamespace(local_path=str(tmp_path))
    JsonLogger()._restore_from_remote("result.json", trial)
    CsvLogger()._restore_from_remote("progress.csv", trial)
    assert restored == ["result.json", "progress.csv"]  # none here yet (a new driver): from storage
    (tmp_path / "result.json").write_text('{"epoch": 1}\n')
    (tmp_path / "progress.csv").write_text("epoch\n1\n")
    JsonLogger()._restore_from_remote("result.json", trial)
    CsvLogger()._restore_from_remote("progress.csv", trial)
    assert restored == ["result.json", "progress.csv"]  # the driver's own copies are kept
