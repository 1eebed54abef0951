"""Recording a curve bank with real training, and replaying it (benchmarks/record_bank.py)."""

import gzip
import json
import math
from pathlib import Path

import pytest

from benchmarks import record_bank
from benchmarks.bank import load_bank
from benchmarks.replay import replay_repeats
from benchmarks.schedulers import SCHEDULERS

SPACE = {
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "hidden_layers": {"type": "int", "low": 1, "high": 5, "step": 2},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    "width": 16,
}


def test_configurations_are_drawn_from_the_space_reproducibly():
    configs = record_bank.draw_configs(SPACE, 200, seed=3)
    assert configs == record_bank.draw_configs(SPACE, 200, seed=3)
    assert configs != record_bank.draw_configs(SPACE, 200, seed=4)
    assert {c["optimizer"] for c in configs} == {"sgd", "adam"} and {c["width"] for c in configs} == {16}
    assert {c["hidden_layers"] for c in configs} == {1, 3, 5}
    lrs = [c["lr"] for c in configs]
    assert 1e-3 <= min(lrs) and max(lrs) <= 1e-1
    assert 0.3 < sum(lr < 1e-2 for lr in lrs) / len(lrs) < 0.7, "log-uniform: half below the middle decade"
    assert all(0.0 <= c["dropout"] <= 0.5 for c in configs)
    assert len({record_bank.config_id(c) for c in configs}) == len(configs)


def test_a_recorded_bank_is_replayable(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    space = tmp_path / "space.yaml"
    space.write_text(
        "hparams:\n"
        "  optimizer: {type: choice, values: [sgd, adam]}\n"
        "  lr: {type: loguniform, low: 1.0e-3, high: 2.0}\n"
        "  hidden_layers: 1\n  width: 16\n  batch_size: 64\n",
        encoding="utf-8",
    )
    out = tmp_path / "bank.jsonl.gz"
    argv = ["--space", str(space), "--dataset", "digits", "--configs", "4", "--seeds", "2"]
    assert record_bank.main([*argv, "--epochs", "3", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and not out.with_name(out.name + ".partial").exists()
    records = [json.loads(line) for line in gzip.open(out, "rt", encoding="utf-8")]
    assert len(records) == 8 and {r["seed"] for r in records} == {0, 1}
    for r in records:
        assert r["epochs"] == 3 and r["config"]["epochs"] == 3
        n = len(r["val_acc"])
        assert all(len(r[k]) == n for k in record_bank.SERIES)
        assert n == 3 or r["stopped_on_nonfinite"]
        assert all(t > 0 for t in r["epoch_time"])
    by_config = {}
    for r in records:
        by_config.setdefault(r["config_id"], []).append(r)
    assert all(len(runs) == 2 for runs in by_config.values())
    seed0, seed1 = by_config[records[0]["config_id"]]
    assert seed0["val_loss"] != seed1["val_loss"], "each seed index trains other initial weights"
    bank = load_bank(out)
    assert len(bank.configs) == 4 and all(len(c.runs) == 2 for c in bank.configs)
    options = {"n_trials": 4, "workers": 2, "repeats": 2, "seed": 0, "max_pending": 2}
    for name in ("asha", "convergence"):
        stats = replay_repeats(SCHEDULERS[name], bank, **options)
        assert all(0 < s.epochs <= 4 * 3 * 2 and not math.isnan(s.sim_time) for s in stats), name


def test_a_bad_space_or_output_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    space = tmp_path / "space.yaml"
    space.write_text("hparams:\n  lr: {type: loguniform, low: 0, high: 1}\n", encoding="utf-8")
    assert record_bank.main(["--space", str(space), "--out", str(tmp_path / "b.jsonl.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --space {space}:") and "\n" not in err and "lr" in err
    assert (
        record_bank.main(["--space", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "b.jsonl.gz")])
        == 2
    )
    with pytest.raises(SystemExit) as exc:
        record_bank.main(["--space", str(space), "--out", str(tmp_path / "bank.json")])
    assert exc.value.code == 2
