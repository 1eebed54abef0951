"""The replay's comparative figures: regret over time, gap closed, restart epochs, rescued configurations,
and the pause-and-resume peer (``bohb_promotion``) and ``convergence_norestart`` rows. No Ray cluster."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bank_helpers import RestartOnceAt3, record, write_bank  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import FIFOScheduler, HyperBandForBOHB, TrialScheduler  # noqa: E402

from benchmarks import regret, replay  # noqa: E402
from benchmarks.bank import Bank, load_bank  # noqa: E402
from benchmarks.metrics import summarize  # noqa: E402
from benchmarks.oracle import gap_closed  # noqa: E402
from benchmarks.replay_sim import SimController, replay_ray  # noqa: E402
from benchmarks.report import table_rows  # noqa: E402
from benchmarks.schedulers import SCHEDULERS  # noqa: E402

DIGITS = ROOT / "benchmarks" / "curves" / "digits.jsonl.gz"


class LoggedBOHB(HyperBandForBOHB):
    """``HyperBandForBOHB`` that logs what each trial reports and each PAUSE it decides."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: dict[str, list[tuple[int, float]]] = {}
        self.pauses = 0

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        self.seen.setdefault(trial.config["config_id"], []).append(
            (result["training_iteration"], result["val_acc"])
        )
        decision = super().on_trial_result(tune_controller, trial, result)
        self.pauses += decision == TrialScheduler.PAUSE
        return decision


def two_seed_bank(tmp_path: Path) -> Bank:
    """``a``: seed 0 ends 0.5, seed 1 ends 0.65 (to rescue); ``b``: seed 0 is its best (nothing to rescue)."""
    seed0 = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.5, 0.6, 0.7, 0.8, 0.9]}
    seed1 = {"a": [0.15, 0.35, 0.45, 0.55, 0.65], "b": [0.2, 0.2, 0.2, 0.2, 0.2]}
    records = [record(c, v, seed=0) for c, v in seed0.items()]
    records += [record(c, v, seed=1) for c, v in seed1.items()]
    return load_bank(write_bank(tmp_path / "two_seeds.jsonl.gz", records))


def test_mean_regret_of_a_handmade_trace() -> None:
    scale = regret.RegretScale(top=0.9, low=0.5)
    # times 0, 1, 2, 3: nothing yet, 0.5 reported at t=1 (counts at t=1), 0.9 at t=2
    assert regret.mean_regret([(1.0, 0.5), (2.0, 0.9)], 3.0, scale, points=4) == pytest.approx(0.5)
    assert regret.mean_regret([], 3.0, scale) == 1.0  # nothing observed: regret 1 throughout
    below = regret.best_so_far([(0.5, 0.2), (2.5, 0.7)], np.array([0.0, 1.0, 3.0]), low=0.5)
    assert below.tolist() == [0.5, 0.5, 0.7]  # a report below the low reference is no progress


def test_regret_scale_uses_the_bank_maximum_and_the_median_final(tmp_path: Path) -> None:
    records = [
        record("a", [0.2, 0.3, 0.4]),
        record("b", [0.5, 0.95, 0.6]),  # a peak above every final
        record("c", [0.6, 0.7, 0.8]),
        record("c", [0.6, 0.7, 0.9], seed=1),
    ]
    bank = load_bank(write_bank(tmp_path / "scale.jsonl.gz", records))
    assert regret.regret_scale(bank) == regret.RegretScale(top=0.95, low=0.6)  # median of 0.4, 0.6, 0.8
    flat = load_bank(write_bank(tmp_path / "flat.jsonl.gz", [record("x", [0.5, 0.5])]))
    assert regret.regret_scale(flat) is None


def test_iqm_and_its_bootstrap_interval() -> None:
    from scipy.stats import trim_mean

    values = [0.3, 0.1, 0.2, 0.4, 5.0, 0.25, 0.35, 0.15]
    assert regret.iqm(values) == pytest.approx(trim_mean(values, 0.25))
    assert regret.iqm([1.0, 2.0, 3.0]) == 2.0  # int(3 / 4) = 0 cut: the mean
    low, high = regret.bootstrap_iqm_ci(values)
    assert low <= regret.iqm(values) <= high and high < 5.0
    assert regret.bootstrap_iqm_ci(values) == (low, high)  # seeded
    assert regret.bootstrap_iqm_ci([0.2] * 5) == pytest.approx((0.2, 0.2))


def test_seeing_the_best_configuration_first_gives_lower_regret(tmp_path: Path) -> None:
    records = [record("best", [0.6, 0.8, 0.9])] + [
        record(f"low{i}", [0.2, 0.3, 0.4 + 0.01 * i]) for i in range(4)
    ]
    bank = load_bank(write_bank(tmp_path / "order.jsonl.gz", records))
    first = [replay_ray(FIFOScheduler(), bank, [0, 1, 2, 3, 4], workers=1, max_pending=1)]
    last = [replay_ray(FIFOScheduler(), bank, [1, 2, 3, 4, 0], workers=1, max_pending=1)]
    figures = regret.regret_figures({"first": first, "last": last}, bank)
    assert figures["first"]["regret_mean"] < figures["last"]["regret_mean"]
    assert figures["first"]["regret_horizon"] == regret.HORIZON_FALLBACK  # no asha: the largest makespan
    # exactly: top 0.9, low 0.42 (median final); "first" reports 0.6, 0.8, 0.9 at t = 1, 2, 3 of 15
    grid = np.linspace(0, 15, regret.REGRET_POINTS)
    best = np.select([grid >= 3, grid >= 2, grid >= 1], [0.9, 0.8, 0.6], 0.42)
    assert figures["first"]["regret_mean"] == pytest.approx(np.mean((0.9 - best) / (0.9 - 0.42)))
    with_asha = regret.regret_figures({"asha": last, "first": first}, bank)
    assert with_asha["first"]["regret_horizon"] == "asha"


def test_gap_closed_against_asha_and_the_oracle() -> None:
    def rows(**times: float | None) -> dict[str, dict[str, Any]]:
        return {name: {"compute_to_target": t} for name, t in times.items()}

    summaries = rows(asha=10.0, ours=4.0, slow=12.0, oracle=2.0)
    assert [gap_closed(summaries, n) for n in summaries] == [0.0, 0.75, -0.25, 1.0]
    assert gap_closed(rows(asha=10.0, ours=4.0), "ours") is None  # no oracle row
    assert gap_closed(rows(asha=2.0, ours=4.0, oracle=2.0), "ours") is None  # asha == oracle
    assert gap_closed(rows(asha=None, ours=4.0, oracle=2.0), "ours") is None  # asha's median never gets there


def test_the_table_counts_repeats_reaching_the_target_when_asha_misses_it(tmp_path: Path) -> None:
    records = [record("best", [0.6, 0.8, 0.9])] + [record(f"low{i}", [0.2, 0.3, 0.4]) for i in range(3)]
    bank = load_bank(write_bank(tmp_path / "miss.jsonl.gz", records))
    hit = replay_ray(FIFOScheduler(), bank, [0, 1, 2, 3], workers=2, max_pending=2)
    miss = replay_ray(FIFOScheduler(), bank, [1, 2, 3], workers=2, max_pending=2)
    stats = {"asha": [miss, miss, hit], "ours": [hit, hit, miss], "oracle": [hit, hit, hit]}
    summaries = {name: summarize(repeats) for name, repeats in stats.items()}
    for name, figures in regret.regret_figures(stats, bank).items():
        summaries[name].update(figures, gap_closed=gap_closed(summaries, name))
    assert [s["reached_target"] for s in summaries.values()] == [1, 2, 3]
    assert all(s["gap_closed"] is None for s in summaries.values())
    header, *cells = table_rows(summaries)
    assert [row[header.index("gap")] for row in cells] == ["1/3", "2/3", "3/3"]


def test_restart_epochs_and_a_rescued_configuration(tmp_path: Path) -> None:
    bank = two_seed_bank(tmp_path)
    restarted = SimController(RestartOnceAt3(), bank, [0, 1], workers=2, max_pending=2).run()
    assert (restarted.epochs, restarted.restart_epochs) == (16, 10)  # 3 + 5 epochs each, 5 restarted
    assert (restarted.rescue_eligible, restarted.rescued) == (1, 1)  # a: seed 1 ends at its best, 0.65
    plain = replay_ray(FIFOScheduler(), bank, [0, 1], workers=2, max_pending=2)
    assert (plain.rescue_eligible, plain.rescued, plain.restart_epochs) == (1, 0, 0)
    summary = summarize([restarted, plain])
    assert summary["restart_epochs_frac"] == pytest.approx(10 / 26) and summary["rescued_frac"] == 0.5
    only_b = replay_ray(FIFOScheduler(), bank, [1], workers=1, max_pending=1)
    assert summarize([only_b])["rescued_frac"] is None  # nothing to rescue was proposed
    one_seed = load_bank(write_bank(tmp_path / "one.jsonl.gz", [record("a", [0.1, 0.2, 0.3])]))
    stats = SimController(RestartOnceAt3(), one_seed, [0], workers=1, max_pending=1).run()
    assert summarize([stats])["rescued_frac"] is None and stats.restart_epochs == 3


def test_bohb_promotion_resumes_a_paused_trial_where_it_stopped(tmp_path: Path) -> None:
    # 9 configurations of 9 epochs, ranked by index at every epoch; eta 3: the first bracket holds
    # all 9 at 1 epoch, the top 3 resume to epoch 3, the best one to epoch 9.
    curves = {f"c{i}": [round(0.1 * i + 0.005 * e, 4) for e in range(9)] for i in range(9)}
    bank = load_bank(write_bank(tmp_path / "nine.jsonl.gz", [record(c, v) for c, v in curves.items()]))
    scheduler = LoggedBOHB(time_attr="training_iteration", max_t=9, reduction_factor=3)
    stats = replay_ray(scheduler, bank, list(range(9)), workers=2, max_pending=2)
    assert scheduler.pauses >= 9 and stats.stranded == 0
    for config_id, seen in scheduler.seen.items():  # each curve continues: epochs 1..k, no repeat
        assert seen == [(e + 1, curves[config_id][e]) for e in range(len(seen))]
    assert {c: len(s) for c, s in scheduler.seen.items() if len(s) > 1} == {"c6": 3, "c7": 3, "c8": 9}
    assert stats.epochs == sum(len(s) for s in scheduler.seen.values()) == 9 + 3 * 2 + 6
    assert stats.best_final_acc == curves["c8"][-1]


def test_convergence_norestart_is_the_default_policy_without_restarts() -> None:
    bank = load_bank(DIGITS)
    default = SCHEDULERS["convergence"].make(bank, 60).policy
    norestart = SCHEDULERS["convergence_norestart"].make(bank, 60).policy
    assert default.config.max_restarts >= 1 and norestart.config.max_restarts == 0
    assert norestart.config == dataclasses.replace(default.config, max_restarts=0)


def test_quick_replay_on_a_shipped_bank_writes_the_new_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    names = "asha,bohb_promotion,convergence_norestart,oracle"
    argv = ["--bank", str(DIGITS), "--schedulers", names, "--repeats", "2", "--trials", "30"]
    assert replay.main([*argv, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["digits"]
    assert list(figures) == names.split(",")
    for summary in figures.values():
        assert list(summary)[: len(replay.JSON_KEYS)] == list(replay.JSON_KEYS)
        assert 0.0 <= summary["regret_ci"][0] <= summary["regret_mean"] <= summary["regret_ci"][1] <= 1.0
        assert summary["regret_horizon"] == "asha" and summary["reached_target"] in (0, 1, 2)
        assert summary["restart_epochs_frac"] == 0.0  # none of these restarts
    assert figures["asha"]["gap_closed"] == 0.0 and figures["oracle"]["gap_closed"] == 1.0
    assert figures["convergence_norestart"]["restarts"] == 0.0
