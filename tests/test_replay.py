"""Tests of the curve-replay benchmark (``benchmarks/``): pure simulation, no Ray cluster started."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from bank_helpers import RestartOnceAt3, record, write_bank  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler  # noqa: E402

from benchmarks import replay  # noqa: E402
from benchmarks.bank import Bank, default_bank_paths, load_bank  # noqa: E402
from benchmarks.metrics import RepeatStats, summarize  # noqa: E402
from benchmarks.replay_sim import SimController, replay_ray  # noqa: E402
from benchmarks.schedulers import SCHEDULERS  # noqa: E402

DIGITS = ROOT / "benchmarks" / "curves" / "digits.jsonl.gz"


@pytest.fixture(scope="module")
def digits() -> Bank:
    return load_bank(DIGITS)


def test_loads_the_digits_bank(digits: Bank) -> None:
    assert len(digits.configs) == 120 and digits.max_epochs == 40 and digits.n_seeds_max == 3
    for curves in digits.configs:
        assert [run.seed for run in curves.runs] == [0, 1, 2]
        for run in curves.runs:
            assert len(run.val_acc) == len(run.epoch_time) == run.budget == 40
            assert all(math.isfinite(v) for v in run.val_acc)
    assert digits.target == max(c.runs[0].final_acc for c in digits.configs)
    assert digits.configs[digits.best_index].runs[0].final_acc == digits.target
    assert digits.chance_hint == pytest.approx(0.1)
    assert [p.name for p in default_bank_paths()].count("digits.jsonl.gz") == 1


def test_fifo_trains_every_epoch_of_every_trial(digits: Bank) -> None:
    order = list(range(0, 120, 4))
    stats = replay_ray(FIFOScheduler(), digits, order, workers=4, max_pending=4)
    assert stats.epochs == sum(digits.configs[i].runs[0].budget for i in order)
    assert stats.best_final_acc == max(digits.configs[i].runs[0].final_acc for i in order)
    assert stats.stranded == 0 and stats.restarts == 0
    serial = sum(sum(digits.configs[i].runs[0].epoch_time) for i in order)
    assert serial / 4 <= stats.sim_time <= serial


def test_asha_spends_fewer_epochs_than_fifo(digits: Bank) -> None:
    order = list(range(60))
    asha = ASHAScheduler(max_t=digits.max_epochs, grace_period=1, reduction_factor=3)
    asha_stats = replay_ray(asha, digits, order, workers=4, max_pending=4)
    fifo_stats = replay_ray(FIFOScheduler(), digits, order, workers=4, max_pending=4)
    assert asha_stats.epochs < fifo_stats.epochs / 2
    assert asha_stats.sim_time < fifo_stats.sim_time
    assert not ray.is_initialized()


def test_restart_replays_the_next_seed_from_epoch_1(tmp_path: Path) -> None:
    seed0 = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.5, 0.6, 0.7, 0.8, 0.9]}
    seed1 = {"a": [0.15, 0.35, 0.45, 0.55, 0.65], "b": [0.2, 0.2, 0.2, 0.2, 0.2]}
    records = [record(c, v, seed=0) for c, v in seed0.items()] + [
        record(c, v, seed=1) for c, v in seed1.items()
    ]
    bank = load_bank(write_bank(tmp_path / "two_seeds.jsonl.gz", records))
    scheduler = RestartOnceAt3()
    controller = SimController(scheduler, bank, [0, 1], workers=2, max_pending=2)
    stats = controller.run()
    for trial in controller.get_trials():
        config_id = trial.config["config_id"]
        expected = [(0, i + 1, 0, v) for i, v in enumerate(seed0[config_id][:3])]
        expected += [(1, i + 1, 1, v) for i, v in enumerate(seed1[config_id])]
        assert scheduler.seen[trial.trial_id] == expected
        assert trial.config["attempt"] == 1 and trial.status == Trial.TERMINATED
        assert trial.last_result["attempt"] == 1 and trial.last_result["done"]
    assert stats.epochs == 2 * (3 + 5) and stats.restarts == 2
    assert stats.restarts_helped == 1  # a: 0.65 > 0.3 at the restart; b: 0.2 < 0.7
    assert stats.best_final_acc == 0.65  # only attempt 1 reached the budget
    assert summarize([stats])["restarts_helped"] == 0.5


def test_restart_with_one_seed_replays_the_same_curve(tmp_path: Path) -> None:
    bank = load_bank(write_bank(tmp_path / "one.jsonl.gz", [record("a", [0.1, 0.2, 0.3, 0.4])]))
    scheduler = RestartOnceAt3()
    SimController(scheduler, bank, [0], workers=1, max_pending=1).run()
    (seen,) = scheduler.seen.values()
    assert [(a, i, v) for a, i, _, v in seen] == [(0, 1, 0.1), (0, 2, 0.2), (0, 3, 0.3)] + [
        (1, i + 1, v) for i, v in enumerate([0.1, 0.2, 0.3, 0.4])
    ]


def test_compute_to_target_on_a_handmade_bank(tmp_path: Path) -> None:
    records = [
        record("a", [0.1, 0.2, 0.3, 0.4], epoch_time=[1, 1, 1, 1]),
        record("b", [0.5, 0.897, 0.6, 0.5], epoch_time=[2, 2, 2, 2]),  # 0.897 is within 0.005 of 0.9
        record("c", [0.3, 0.6, 0.8, 0.9], epoch_time=[1, 1, 1, 1]),  # the best final: target 0.9
    ]
    bank = load_bank(write_bank(tmp_path / "target.jsonl.gz", records))
    assert bank.target == 0.9 and bank.best_index == 2
    one = replay_ray(FIFOScheduler(), bank, [0, 1, 2], workers=1, max_pending=1)
    assert (one.time_to_target, one.epochs_to_target) == (8.0, 6)  # a: t=1..4, b: epoch 2 at t=8
    assert one.sim_time == 16.0 and one.epochs == 12 and one.best_final_acc == 0.9
    two = replay_ray(FIFOScheduler(), bank, [0, 1, 2], workers=2, max_pending=2)
    assert two.time_to_target == 4.0  # b's epoch 2 ends at t=4, before a's epoch 4 (queued later)
    assert two.epochs_to_target == 5
    never = replay_ray(FIFOScheduler(), bank, [0], workers=1, max_pending=1)
    assert never.time_to_target is None and never.epochs_to_target is None
    assert never.best_config_proposed is False and never.best_config_pruned is False
    runs = [one, two, never]
    assert summarize(runs)["compute_to_target"] == 8.0  # median of 4, 8, inf
    assert summarize([one, never, never])["compute_to_target"] is None


def test_best_config_pruned_is_counted(tmp_path: Path) -> None:
    records = [record(c, [0.5, 0.5, 0.5 + 0.1 * i, 0.5 + 0.1 * i]) for i, c in enumerate("abcd")]
    records.append(record("e", [0.1, 0.1, 0.1, 0.95]))  # a late bloomer: ASHA stops it at epoch 1
    bank = load_bank(write_bank(tmp_path / "late.jsonl.gz", records))
    asha = ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2)
    stats = replay_ray(asha, bank, [0, 1, 2, 3, 4], workers=1, max_pending=1)
    assert stats.best_config_proposed and stats.best_config_pruned


def test_unseen_bank_with_one_seed_and_missing_diagnostics(tmp_path: Path) -> None:
    records = [record(f"c{i}", [0.2 + 0.05 * i] * 6, train_loss=None) for i in range(12)]
    diverged = record("nan", [0.4, 0.1], epochs=6, stopped_on_nonfinite=True, val_loss=[2.0, None])
    diverged["epoch_time"] = [2.0, None]
    bank = load_bank(write_bank(tmp_path / "unseen.jsonl.gz", [*records, diverged]))
    run = bank.configs[-1].runs[0]
    assert run.val_acc == (0.4, 0.1, 0.1, 0.1, 0.1, 0.1)  # the tail repeats the last finite value
    assert math.isnan(run.val_loss[1]) and math.isnan(run.val_loss[5]) and math.isnan(run.grad_norm[0])
    assert run.epoch_time == (2.0, 1.0, 2.0, 2.0, 2.0, 2.0)  # null -> 1, tail -> mean of finite times
    options = {"n_trials": 13, "workers": 3, "repeats": 2, "seed": 1, "max_pending": 3}
    for name, spec in SCHEDULERS.items():
        if name.startswith("convergence"):
            continue
        stats = replay.replay_repeats(spec, bank, **options)
        assert len(stats) == 2 and all(isinstance(s, RepeatStats) for s in stats)
        assert all(0 < s.epochs <= 13 * 6 and s.stranded == 0 for s in stats), name
    fifo = replay.replay_repeats(SCHEDULERS["fifo"], bank, **{**options, "workers": 1})
    assert fifo[0].sim_time == pytest.approx(12 * 6 + 2 + 1 + 4 * 2)
    assert not ray.is_initialized()


def test_json_output_has_the_required_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bank_path = write_bank(
        tmp_path / "tiny.jsonl.gz", [record(f"c{i}", [0.1 * i, 0.1 * i + 0.05]) for i in range(9)]
    )
    out = tmp_path / "out.json"
    argv = ["--bank", str(bank_path), "--schedulers", "asha,fifo,topk,optuna_median", "--repeats", "2"]
    assert replay.main([*argv, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert list(figures) == ["tiny"] and list(figures["tiny"]) == ["asha", "fifo", "topk", "optuna_median"]
    for summary in figures["tiny"].values():
        assert set(replay.JSON_KEYS) <= set(summary)
    assert figures["tiny"]["fifo"]["epochs"] == 18 and figures["tiny"]["fifo"]["restarts_helped"] is None
    assert figures["tiny"]["topk"]["epochs"] == 9 + 1  # k = max(1, 9 // 8) = 1 continues one more epoch
    printed = capsys.readouterr().out
    assert "== tiny:" in printed and "x_asha" in printed and "optuna_median" in printed


def test_quick_flag_and_unknown_scheduler() -> None:
    args = replay.parse_args(["--quick"])
    assert (args.repeats, args.trials) == (3, 100)
    with pytest.raises(ValueError, match="unknown scheduler"):
        replay.main(["--schedulers", "nope"])


def test_pausing_schedulers_resume_every_trial(digits: Bank) -> None:
    order = list(range(60))
    for name in ("hyperband", "median", "topk"):
        stats = replay_ray(SCHEDULERS[name].make(digits, len(order)), digits, order, workers=4, max_pending=4)
        assert stats.stranded == 0 and 60 <= stats.epochs < 60 * 40, name


def test_noop_that_leaves_a_trial_running_is_an_error(digits: Bank) -> None:
    class Idle(FIFOScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
            return TrialScheduler.NOOP

    with pytest.raises(RuntimeError, match="NOOP"):
        replay_ray(Idle(), digits, [0], workers=1, max_pending=1)


def test_convergence_is_skipped_with_a_note_when_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import schedulers

    monkeypatch.setattr(schedulers, "convergence_unavailable", lambda: "not written yet")
    specs, notes = schedulers.resolve(["asha", "convergence"])
    assert [s.name for s in specs] == ["asha"] and notes == ["convergence skipped: not written yet"]


def test_the_oracle_stops_what_never_reaches_the_target_after_one_epoch(tmp_path: Path) -> None:
    from benchmarks.oracle import OracleScheduler, hitters

    records = [
        record("late", [0.1, 0.2, 0.5, 0.9]),  # reaches 0.9 (the best final) only at the end
        record("peaks", [0.3, 0.897, 0.6, 0.6]),  # within 0.005 of 0.9 at epoch 2: a hitter too
        record("flat", [0.5, 0.6, 0.7, 0.8]),
        record("low", [0.1, 0.1, 0.1, 0.1]),
    ]
    bank = load_bank(write_bank(tmp_path / "hand.jsonl.gz", records))
    assert hitters(bank) == {"late", "peaks"}
    stats = replay_ray(OracleScheduler(hitters(bank)), bank, [2, 3, 0, 1], workers=1, max_pending=1)
    assert stats.epochs == 1 + 1 + 4 + 4 and stats.epochs_to_target == 6  # hitters run to the budget
    two = replay_ray(OracleScheduler(hitters(bank), epochs=2), bank, [2, 3, 0, 1], workers=1, max_pending=1)
    assert two.epochs_to_target == 2 + 2 + 4
    with pytest.raises(ValueError, match="epochs"):
        OracleScheduler(set(), epochs=0)


def test_the_convergence_scheduler_pauses_and_resumes_so_the_spirals_best_is_rarely_lost() -> None:
    """Freeze-thaw on a shipped bank, default settings: the best configuration of spirals (a slow
    starter that ASHA cuts at epoch 3 in most repeats) ends pruned or paused-never-resumed in at
    most 1 of 20 repeats (35% before pausing), the best final is at least ASHA's, nothing is left
    PAUSED, and a paused trial's curve continues where it stopped."""
    bank = load_bank(ROOT / "benchmarks" / "curves" / "spirals.jsonl.gz")
    options = {"n_trials": len(bank.configs), "workers": 4, "repeats": 20, "seed": 0, "max_pending": 4}
    ours = summarize(replay.replay_repeats(SCHEDULERS["convergence"], bank, **options))
    asha = summarize(replay.replay_repeats(SCHEDULERS["asha"], bank, **options))
    assert ours["best_config_pruned_frac"] <= 0.05 < asha["best_config_pruned_frac"]
    assert ours["best_final_acc"] >= asha["best_final_acc"] - 0.001
    assert ours["stranded"] == 0
    scheduler = SCHEDULERS["convergence"].make(bank, len(bank.configs))
    seen: dict[str, list[int]] = {}
    observe = scheduler.on_trial_result

    def spy(controller: Any, trial: Trial, result: dict) -> str:
        seen.setdefault(trial.trial_id, []).append(int(result["epoch"]))
        return observe(controller, trial, result)

    scheduler.on_trial_result = spy  # type: ignore[method-assign]
    order = replay.config_order(len(bank.configs), len(bank.configs), 0, 0)
    SimController(scheduler, bank, order, workers=4, max_pending=4).run()
    resumed = [tid for tid in seen if any(r.resumed for r in scheduler.policy.pause_record(tid))]
    assert resumed
    for tid in resumed:
        assert seen[tid] == list(range(1, len(seen[tid]) + 1))  # no epoch replayed or skipped
        assert len(seen[tid]) > scheduler.policy.pause_record(tid)[0].epoch


def test_head_start_splits_the_time_to_target_at_the_first_hitters_start(tmp_path: Path) -> None:
    from benchmarks.head_start import HeadStart, head_start, main

    records = [
        record("late", [0.1, 0.2, 0.5, 0.9], epoch_time=[1.0] * 4),  # the only hitter, at its epoch 4
        record("flat", [0.5, 0.6, 0.7, 0.8], epoch_time=[2.0] * 4),
        record("low", [0.1, 0.1, 0.1, 0.1], epoch_time=[3.0] * 4),
    ]
    path = write_bank(tmp_path / "hand.jsonl.gz", records)
    bank = load_bank(path)
    # one worker, order flat, low, late: the oracle gives flat and low one epoch each (2 s + 3 s)
    assert head_start("oracle", bank, [1, 2, 0], workers=1) == HeadStart(9.0, 5.0, 5.0, 5.0, 0.0)
    fifo = head_start("fifo", bank, [1, 2, 0], workers=1)  # every epoch of flat and low first
    assert fifo == HeadStart(20.0 + 4.0, 20.0, 20.0, 20.0, 0.0)
    assert head_start("fifo", bank, [1, 2], workers=1) is None  # no hitter proposed: never reached
    assert main(["--bank", str(path), "--schedulers", "oracle", "--repeats", "2"]) == 0
    with pytest.raises(SystemExit):
        main(["--bank", str(path), "--schedulers", "nope"])
