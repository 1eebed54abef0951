"""The performance benchmarks measure what they say: scale, overhead (floor run) and the MLflow rate.

No timed assertions: these check the keys, the arithmetic and the invariants of the measurements.
"""

import json
import math

import pytest

from benchmarks import mlflow_rate, overhead, scale
from benchmarks.overhead_runs import FIXED, LR_HIGH, LR_LOW


def test_synthetic_bank_holds_every_trial_with_finite_accuracy_and_some_diverged_runs():
    bank = scale.synthetic_bank(400, 30, seed=1, shapes=100)
    assert len(bank.configs) == 400 and bank.max_epochs == 30 and bank.chance_hint == scale.CHANCE
    runs = {id(c.runs[0]): c.runs[0] for c in bank.configs}
    assert 50 < len(runs) <= 100  # 100 shapes resampled
    for run in runs.values():
        assert run.budget == 30 and len(run.val_acc) == len(run.val_loss) == 30
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in run.val_acc)
    assert any(any(math.isnan(v) for v in r.val_loss) for r in runs.values())  # divergences
    assert bank.configs[bank.best_index].runs[0].final_acc == bank.target


def test_scale_quick_writes_the_issue_keys_with_sane_values(tmp_path, capsys):
    path = tmp_path / "scale.json"
    assert scale.main(["--quick", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    dec = doc["decision_us"]
    assert 0 < dec["median"] <= dec["p99"]
    details = doc["details"]["decisions"]
    assert details["results"] == details["all"]["count"] > 0
    assert details["results"] <= details["epochs_budgeted"] == 300 * 30
    assert details["with_extrapolation"]["count"] <= details["results"]
    assert doc["scheduler_bytes_per_trial"] > 0
    assert set(doc["optuna_suggest_ms"]) == {"100", "300"}
    assert all(v > 0 for v in doc["optuna_suggest_ms"].values())
    assert set(doc["details"]["optuna_suggest_ms_by_setting"]) == set(scale.ALTERNATIVES)
    assert "decision CPU time" in capsys.readouterr().out


def test_scheduler_memory_per_trial_stops_growing_beyond_the_policy_window():
    # history is 64 epochs by default: past it, more epochs must not cost more memory
    mem = scale.scheduler_bytes_per_trial(20, (70, 140))
    assert mem[70] > 0
    assert mem[140] == pytest.approx(mem[70], rel=0.15)


def test_suggest_ms_fills_the_study_to_the_asked_configuration():
    cpu, wall = scale.suggest_ms(30, repeats=1)
    assert cpu > 0 and wall > 0


def test_summarize_computes_efficiency_first_result_and_mlflow_cost_from_the_records():
    records = [
        {"k": "epoch", "t1": 105.0, "s": 3.0},
        {"k": "epoch", "t1": 103.0, "s": 2.0},
        {"k": "first_result", "t": 104.0},
        {"k": "results", "n": 2},
        {"k": "timed", "name": "A", "s": 0.010, "calls": 3, "results": 2},
        {"k": "timed", "name": "B", "s": 0.002, "calls": 1, "results": 2},
    ]
    s = overhead.summarize(records, started=100.0, wall=10.0, slots=2)
    assert s["training_s"] == 5.0 and s["epochs"] == 2
    assert s["efficiency"] == pytest.approx(5.0 / 20.0)
    assert s["first_result_s"] == pytest.approx(4.0)  # the driver's first result, not the first epoch
    assert s["mlflow_ms_per_result"] == pytest.approx(6.0)
    floor = overhead.summarize(records[:2], started=100.0, wall=10.0, slots=2)
    assert floor["first_result_s"] == pytest.approx(3.0)  # no driver: the first epoch's end
    assert floor["mlflow_ms_per_result"] is None and floor["results"] is None


def test_ours_command_fixes_every_hyperparameter_but_a_narrow_lr():
    args = overhead.ours_command(8, 5)[3:]
    cfg = scale.default_config(args)
    assert set(cfg.space.searched) == {"lr"}
    lr = cfg.space.searched["lr"]
    assert (lr.low, lr.high) == (LR_LOW, LR_HIGH)
    for key, value in FIXED.items():
        assert cfg.space.fixed[key] == value, key
    assert (cfg.num_samples, cfg.trainable.epochs, cfg.max_concurrent_trials) == (8, 5, 2)
    assert cfg.scheduler.name == "fifo" and cfg.tracking.enabled


@pytest.mark.slow  # two processes importing torch: ~6 s on a quiet machine, a minute on a busy one
def test_the_floor_run_is_measured_consistently(tmp_path):
    run = overhead.measure(overhead.runs_command("floor", 3, 2), poll_s=0.05, timeout_s=300)
    assert run.returncode == 0
    assert run.epochs == 6 and run.training_s > 0  # every epoch of every trial was timed by the hook
    assert run.efficiency == pytest.approx(run.training_s / (run.wall_s * overhead.SLOTS))
    assert 0 < run.efficiency < 1
    assert 0 < run.first_result_s < run.wall_s
    assert 0 < run.driver_peak_rss_mib < run.total_peak_rss_mib  # the workers are counted in the total
    assert run.results is None and run.mlflow_ms_per_result is None


def test_render_flags_each_target():
    run = {
        "wall_s": 10.0, "training_s": 8.0, "efficiency": 0.4, "driver_peak_rss_mib": 300.0,
        "total_peak_rss_mib": 900.0, "first_result_s": 7.0, "mlflow_ms_per_result": 1.0,
    }  # fmt: skip
    doc = {
        "ours": run,
        "plain_ray": {**run, "wall_s": 20.0},
        "floor": {**run, "mlflow_ms_per_result": None},
        "ratios": {"wall_vs_plain_ray": 0.5, "wall_vs_floor": 1.0},
    }
    text = overhead.render(doc)
    assert "efficiency >= 0.9: 0.4 MISSED" in text
    assert "wall_vs_plain_ray <= 0.6: 0.5 met" in text
    assert "first_result_s <= 6: 7 MISSED" in text
    assert "driver_peak_rss_mib <= 350: 300 met" in text


@pytest.mark.slow
def test_mlflow_rate_writes_every_result_to_a_real_server(tmp_path):
    path = tmp_path / "rate.json"
    assert mlflow_rate.main(["--results", "120", "--trials", "4", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    for writer in ("batched", "tracker"):
        assert doc[writer]["dropped"] == 0 and doc[writer]["results"] == 120
        assert doc[writer]["results_per_s"] > 0
    # 4 runs x 30 results x 9 values = 270 per run: one full batch of 200 and the rest at the end
    assert doc["batched"]["requests"] == 8


# -- the windowed TPE that keeps suggestions fast in long sweeps (orchestrator/search.py) ----------
def _study_with(n, sampler, seed=0):
    import numpy as np
    import optuna

    space = {
        "x": optuna.distributions.FloatDistribution(0.0, 1.0),
        "k": optuna.distributions.IntDistribution(1, 4),
    }
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={"x": float(rng.uniform()), "k": int(rng.integers(1, 5))},
                distributions=space,
                value=float(rng.uniform()),
            )
            for _ in range(n)
        ]
    )
    return study, space


def test_windowed_tpe_sees_the_recent_window_the_best_old_trials_and_unfinished_old_ones():
    import optuna

    from orchestrator.search import WindowedTPESampler

    sampler = WindowedTPESampler(window=50, keep_best=5, seed=0)
    study, space = _study_with(40, sampler)
    trials = study._get_trials(deepcopy=False)
    assert sampler.window_of(study, trials) == trials  # small studies: the whole history
    running = study.ask(space)  # an old trial that is still running when it leaves the window
    study.add_trials(_study_with(200, None, seed=1)[0].trials)
    trials = study._get_trials(deepcopy=False)
    seen = sampler.window_of(study, trials)
    old = [t for t in trials[: len(trials) - 50] if t.state == optuna.trial.TrialState.COMPLETE]
    best = sorted(old, key=lambda t: -t.value)[:5]
    assert [t.number for t in seen] == sorted(
        [t.number for t in best] + [running.number] + [t.number for t in trials[-50:]]
    )
    # the running trial finishes with the best value of all: it stays in view as one of the best
    study.tell(running, 2.0)
    trials = study._get_trials(deepcopy=False)
    seen_numbers = {t.number for t in sampler.window_of(study, trials)}
    assert running.number in seen_numbers and len(seen_numbers) == 5 + 50


def test_windowed_tpe_suggests_what_tpe_suggests_below_its_window():
    import optuna

    from orchestrator.search import WindowedTPESampler

    def suggestions(sampler):
        study, space = _study_with(60, sampler)
        return [study.ask(space).params for _ in range(3)]

    plain = optuna.samplers.TPESampler(seed=3, multivariate=True, constant_liar=True)
    windowed = WindowedTPESampler(window=100, seed=3, multivariate=True, constant_liar=True)
    assert suggestions(windowed) == suggestions(plain)
    small = WindowedTPESampler(window=20, keep_best=5, seed=3, multivariate=True, constant_liar=True)
    assert all(0.0 <= p["x"] <= 1.0 and 1 <= p["k"] <= 4 for p in suggestions(small))


def test_the_default_tpe_searcher_is_windowed():
    from orchestrator import search

    sampler = search.build_searcher(scale.default_config([]))._ot_study.sampler
    assert isinstance(sampler, search.WindowedTPESampler) and sampler.window == search.TPE_WINDOW


def test_the_windowed_searcher_survives_an_experiment_checkpoint(tmp_path):
    from orchestrator import search

    searcher = search.build_searcher(scale.default_config([]))
    searcher.suggest("a")
    searcher.save(str(tmp_path / "searcher.pkl"))  # what Tune does on experiment snapshots
    restored = search.build_searcher(scale.default_config([]))
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert isinstance(restored._ot_study.sampler, search.WindowedTPESampler)
    assert restored.suggest("b") is not None


def test_the_hook_times_named_classes_and_phases_in_a_child_process(tmp_path):
    import subprocess
    import sys

    env = overhead._env(str(tmp_path), "textwrap:TextWrapper")
    env["BENCH_PHASES"] = "textwrap:dedent"
    code = (
        "import textwrap\nfor _ in range(3): textwrap.TextWrapper(width=5).fill(textwrap.dedent(' a b c d'))"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    records = overhead.read_records(str(tmp_path))
    timed = {r["name"]: r for r in records if r["k"] == "timed"}
    assert timed["TextWrapper.fill"]["calls"] == 3  # fill calls wrap: counted once, in fill
    assert timed["TextWrapper.__init__"]["calls"] == 3 and timed["TextWrapper.wrap"]["calls"] == 0
    assert [r["name"] for r in records if r["k"] == "phase"] == ["dedent"] * 3
