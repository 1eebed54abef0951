"""The seed figures of a curve bank (benchmarks/seeds.py), on a bank written here and the shipped ones."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from benchmarks import seeds
from benchmarks.bank import CURVES_DIR, load_bank

EPOCHS = 3


def _record(config_id: str, seed: int, val_acc: list[float | None]) -> dict:
    """A bank record whose curve ends at ``val_acc``'s values; ``None`` marks a non-finite epoch."""
    stopped = None in val_acc
    return {
        "config_id": config_id,
        "config": {"lr": 0.01},
        "seed": seed,
        "epochs": EPOCHS,
        "val_acc": val_acc,
        "val_loss": [None if v is None else 1.0 - v for v in val_acc],
        "stopped_on_nonfinite": stopped,
    }


def _write_bank(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return path


@pytest.fixture
def tiny_bank(tmp_path: Path) -> Path:
    records = [
        # "lucky": two seeds near 0.90, one stuck 0.2 below: seed-dependent
        *(_record("lucky", s, [0.3, 0.6, acc]) for s, acc in enumerate([0.90, 0.89, 0.70])),
        # "steady": its seeds span 0.08 < 0.1: not seed-dependent
        *(_record("steady", s, [0.3, 0.6, acc]) for s, acc in enumerate([0.90, 0.85, 0.82])),
        # "alone": one seed cannot depend on the seed
        _record("alone", 0, [0.3, 0.5, 0.6]),
        # "blowup": seed 0 diverged at epoch 3 after reaching 0.95 (its final is that last finite 0.95),
        # seed 1 ended at 0.40: seed-dependent, and the bank's best
        _record("blowup", 0, [0.5, 0.95, None]),
        _record("blowup", 1, [0.3, 0.35, 0.40]),
    ]
    return _write_bank(tmp_path / "tiny.jsonl.gz", records)


def test_seed_dependent_is_a_near_best_seed_and_one_far_below() -> None:
    assert seeds.seed_dependent([0.90, 0.89, 0.70])
    assert not seeds.seed_dependent([0.90, 0.85, 0.82])  # spread 0.08
    assert not seeds.seed_dependent([0.9])
    assert not seeds.seed_dependent([])
    # exactly `far` below is not more than `far` below (binary-exact values)
    assert not seeds.seed_dependent([0.75, 0.5], near=0.125, far=0.25)
    assert seeds.seed_dependent([0.75, 0.4375], near=0.125, far=0.25)
    with pytest.raises(ValueError, match="near < far"):
        seeds.seed_dependent([0.9, 0.1], near=0.2, far=0.1)


def test_figures_of_a_tiny_bank(tiny_bank: Path) -> None:
    figures = seeds.seed_figures(load_bank(tiny_bank))
    assert figures.name == "tiny" and figures.configs == 4
    assert (figures.seeds_min, figures.seeds_max) == (1, 3)
    assert figures.seed_dependent == 2 and figures.seed_dependent_share == 0.5  # lucky, blowup
    assert figures.best == pytest.approx(0.95)  # the diverged run's last finite accuracy
    assert figures.near_best == 1 and figures.near_best_share == 0.25  # blowup alone within 0.005


def test_the_command_line_prints_one_line_per_bank(
    tiny_bank: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seeds.main([str(tiny_bank), str(tiny_bank)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["bank", "configs", "seeds"]
    assert lines[1].split() == ["tiny", "4", "1-3", "0.500", "(2)", "0.250", "(1)", "0.950"]
    assert lines[2] == lines[1] and "seed-dependent: some seed within 0.02" in lines[3]
    assert seeds.main([str(tiny_bank.with_name("missing.jsonl.gz"))]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["spirals", "digits_deep_relu"])
def test_the_shipped_seed_banks_depend_on_the_seed_and_still_converge(name: str) -> None:
    figures = seeds.seed_figures(load_bank(CURVES_DIR / f"{name}.jsonl.gz"))
    assert figures.configs >= 60 and figures.seeds_min == figures.seeds_max == 4
    assert figures.seed_dependent_share >= 0.15
    assert figures.best >= 0.9 and figures.near_best >= 1


def test_a_bank_with_one_seed_per_configuration_has_no_seed_dependence() -> None:
    figures = seeds.seed_figures(load_bank(CURVES_DIR / "lcbench" / "lcbench-3945.jsonl.gz"))
    assert figures.seeds_max == 1 and figures.seed_dependent == 0
