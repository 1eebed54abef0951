"""The convergence report on a small sweep whose numbers can be checked by hand."""

import json
import math
import os
import subprocess
import sys

import pytest

from analysis.convergence import convergence_epoch
from analysis.load import SweepNotFound, load_ray_dir
from analysis.records import parse_value
from analysis.report import build, decay_rate, decision_label

# Four trials of a 10-epoch budget; val_acc curves written by hand.
FLAT = [0.95] * 6  # on a plateau from epoch 1
RISING = [0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96]
CHANCE = [0.1] * 5
BLOWUP = [0.3, 0.2, 0.1]
TRIALS = [
    # name, params, per-attempt val_acc curves, last action, verdict
    ("trial_0000_aaaa", {"optimizer": "adam", "lr": 0.003, "batch_size": 32, "dropout": 0.0}, [FLAT], "stop",
     "converged"),
    ("trial_0001_bbbb", {"optimizer": "adam", "lr": 0.02, "batch_size": 64, "dropout": 0.2}, [RISING],
     "continue", "progressing"),
    ("trial_0002_cccc", {"optimizer": "sgd", "lr": 0.0002, "batch_size": 32, "dropout": 0.0},
     [CHANCE, RISING[:8]], "continue", "progressing"),
    ("trial_0003_dddd", {"optimizer": "sgd", "lr": 5.0, "batch_size": 64, "dropout": 0.0}, [BLOWUP], "prune",
     "diverged"),
]  # fmt: skip


def _loss(acc):
    return [2.0 * math.exp(-0.3 * (e + 1)) + (1 - a) * 0.01 for e, a in enumerate(acc)]


def write_sweep(root):
    """A Ray results directory in the layout a sweep writes (params.json, result.json per trial)."""
    sweep = root / "handmade_20261122-101010"
    sweep.mkdir()
    clock = 1_800_000_000
    for name, params, attempts, action, verdict in TRIALS:
        d = sweep / name
        d.mkdir()
        (d / "params.json").write_text(json.dumps({**params, "epochs": 10, "attempt": 0, "trial_index": 0}))
        rows = []
        for attempt, acc in enumerate(attempts):
            for e, (a, loss) in enumerate(zip(acc, _loss(acc), strict=True), start=1):
                clock += 1
                last = attempt == len(attempts) - 1 and e == len(acc)
                rows.append(
                    {
                        "epoch": e,
                        "attempt": attempt,
                        "seed": 100 + attempt,
                        "val_acc": a,
                        "val_loss": loss,
                        "train_loss": loss,
                        "time_this_iter_s": 0.5 if params["batch_size"] == 32 else 0.25,
                        "timestamp": clock,
                        "trial_id": name[-4:],
                        "verdict": verdict if last else ("stuck" if e == len(acc) else "progressing"),
                        "verdict_reason": f"{verdict} at epoch {e}",
                        "action": action if last else ("restart" if e == len(acc) else "continue"),
                        "decision_reason": "stuck: chance for 5 epochs" if e == len(acc) else "",
                    }
                )
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sweep


@pytest.fixture
def sweep_dir(tmp_path):
    return write_sweep(tmp_path)


def test_decay_rate_is_the_fitted_exponential_rate():
    falling = [2 * math.exp(-0.3 * t) for t in range(1, 11)]
    assert decay_rate(falling) == pytest.approx(0.3)
    assert decay_rate(falling + [9.0] * 5, until=10) == pytest.approx(0.3)
    assert decay_rate([1.0] * 6) == pytest.approx(0.0, abs=1e-12)
    assert decay_rate([1.0, float("nan")]) is None
    assert decay_rate([1.0, 2.0, 4.0]) == pytest.approx(-math.log(2))


def test_params_read_back_as_the_values_they_were():
    assert [parse_value(v) for v in ("128", "0.001", "1e-05", "True", "relu", "None")] == [
        128, 0.001, 1e-05, True, "relu", None]  # fmt: skip


def test_the_ray_directory_is_read_into_trials_and_attempts(sweep_dir):
    sweep = load_ray_dir(str(sweep_dir))
    assert sweep.name == "handmade" and sweep.metric == "val_acc" and sweep.mode == "max"
    assert [t.name for t in sweep.trials] == [t[0] for t in TRIALS]
    statuses = [t.status for t in sweep.trials]
    assert statuses == ["CONVERGED", "COMPLETED", "STOPPED_EARLY", "PRUNED"]
    restarted = sweep.trials[2]
    assert [len(a.epochs) for a in restarted.attempts] == [5, 8]
    assert [a.seed for a in restarted.attempts] == [100, 101]
    assert restarted.restart_reasons == ["stuck: chance for 5 epochs"]
    assert restarted.epochs_run == 13 and restarted.final("val_acc") == RISING[7]


def test_a_trial_that_rays_snapshot_does_not_know_is_left_out(sweep_dir):
    names = [t[0] for t in TRIALS]
    known = [{"trial_id": n[-4:], "status": "TERMINATED", "relative_logdir": n} for n in names[:3]]
    state = {"trial_data": [[json.dumps(t), "{}"] for t in known]}
    (sweep_dir / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    # the last trial started after that snapshot, by a driver that died: LOST in the resumed sweep
    assert [t.name for t in load_ray_dir(str(sweep_dir)).trials] == names[:3]


def test_a_replayed_epoch_keeps_its_first_report_as_mlflow_does(sweep_dir):
    path = sweep_dir / "trial_0001_bbbb" / "result.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    replay = [dict(r, val_acc=r["val_acc"] - 0.01) for r in rows[4:6]]  # epochs 5-6 again after a crash
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:7] + replay + rows[6:]))
    trial = load_ray_dir(str(sweep_dir)).trials[1]
    assert trial.attempts[0].epochs == list(range(1, 11))
    assert trial.attempts[0].series["val_acc"] == RISING


def test_the_report_gives_the_numbers_worked_out_by_hand(sweep_dir):
    report = build(load_ray_dir(str(sweep_dir)))
    s = report.summary()
    assert s["trials"] == 4 and s["best_value"] == 0.96 and s["best_trial"] == "trial_0001_bbbb"
    assert s["epochs_run"] == 6 + 10 + 13 + 3 and s["epochs_budget"] == 40
    assert s["epochs_saved"] == 40 - 32
    assert s["restarts"] == 1 and s["restarted_trials"] == 1 and s["restarts_helped"] == 1
    by_trial = {st.trial.name: st for st in report.stats}
    # the convergence epoch is analysis.convergence's on the recorded curve
    for name, st in by_trial.items():
        curve = st.trial.attempts[-1].series["val_acc"]
        assert st.convergence_epoch == convergence_epoch(curve, mode="max"), name
    assert by_trial["trial_0000_aaaa"].convergence_epoch == 1 and by_trial["trial_0000_aaaa"].converged
    assert by_trial["trial_0003_dddd"].converged is False
    assert by_trial["trial_0000_aaaa"].decay_rate is None  # converged at epoch 1: no decay to fit
    assert by_trial["trial_0001_bbbb"].convergence_epoch is None
    assert by_trial["trial_0001_bbbb"].decay_rate == pytest.approx(0.3, rel=0.05)  # its loss ~ 2 exp(-0.3 t)

    decisions = {row[0]: row[1:] for row in report.decisions.rows}
    assert decisions["CONVERGED"] == (1, 6, 10, 4, 0)
    assert decisions["PRUNED (diverged)"] == (1, 3, 10, 7, 0)
    assert decisions["STOPPED_EARLY"] == (1, 13, 10, -3, 1)
    assert decisions["all"] == (4, 32, 40, 8, 1)

    tables = {t.title: t for t in report.factors}
    opt = {row[0]: row for row in tables["by optimizer"].rows}
    assert opt["adam"][1:3] == (2, int(by_trial["trial_0001_bbbb"].converged) + 1)
    assert opt["adam"][4] == 0.96 and opt["adam"][5] == pytest.approx((0.95 + 0.96) / 2)
    assert opt["sgd"][1] == 2 and opt["sgd"][7] == 1 and opt["sgd"][8] == 1 and opt["sgd"][9] == 1
    lr = [row[0] for row in tables["by learning-rate decade"].rows]
    assert lr == ["[1e-4, 1e-3)", "[1e-3, 1e-2)", "[1e-2, 1e-1)", "[1e0, 1e1)"]
    reg = {row[0]: row[1] for row in tables["by regularization"].rows}
    assert reg == {"dropout": 1, "none": 3}
    batch = {row[0]: row[10] for row in tables["by batch size"].rows}
    assert batch == {"32": 0.5, "64": 0.25}
    assert "by depth (hidden layers)" not in tables  # not in the params: no table
    assert set(report.importance or {}) <= {"optimizer", "lr", "batch_size", "dropout"}


def test_decision_labels_name_the_rule_behind_a_prune(sweep_dir):
    trials = load_ray_dir(str(sweep_dir)).trials
    assert decision_label(trials[3]) == "PRUNED (diverged)"
    trials[3].decision_reason = "rank rule: below its rung at epoch 3"
    assert decision_label(trials[3]) == "PRUNED (rank rule)"


def test_the_command_line_writes_markdown_json_and_plots(sweep_dir, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", str(sweep_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "by optimizer" in proc.stdout and "PRUNED (diverged)" in proc.stdout
    files = ["anytime.png", "curves.png", "report.json", "report.md", "timeline.png"]
    assert sorted(os.listdir(out)) == files
    md = (out / "report.md").read_text()
    assert "| adam |" in md and "![curves.png](curves.png)" in md
    data = json.loads((out / "report.json").read_text())
    assert data["summary"]["epochs_run"] == 32
    for png in ("anytime.png", "curves.png", "timeline.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_that_is_not_there_is_one_clear_error(tmp_path):
    with pytest.raises(SweepNotFound, match="not a sweep"):
        load_ray_dir(str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "no_such_sweep", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: sweep: no_such_sweep")
