"""The prior from earlier sweeps (orchestrator/policy/prior.py, prior_guard.py, orchestrator/priors.py),
on the real shipped curve banks: leave-one-bank-out, the bank judged is never in its own prior."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import replay  # noqa: E402
from benchmarks.bank import load_bank  # noqa: E402
from benchmarks.schedulers import SCHEDULERS  # noqa: E402
from benchmarks.train_prior import _banks, bank_curves, lobo_table, prior_without  # noqa: E402
from orchestrator.errors import ConfigError  # noqa: E402
from orchestrator.policy import CONTINUE, PRUNE, AshaRungs, decision_text, policy_from_settings  # noqa: E402
from orchestrator.policy.prior import PriorModel, examples  # noqa: E402
from orchestrator.policy.prior_guard import PriorGuard  # noqa: E402
from orchestrator.policy.trial import _Trial  # noqa: E402
from orchestrator.priors import SHIPPED, load_prior  # noqa: E402

CURVES = ROOT / "benchmarks" / "curves"


@pytest.fixture(scope="module")
def table() -> dict[str, dict[int, tuple[float, float]]]:
    return lobo_table()


def test_the_shipped_prior_is_what_its_command_builds() -> None:
    shipped = PriorModel.from_dict(json.loads(SHIPPED.read_text(encoding="utf-8")))
    rebuilt = prior_without(None)
    x, _ = examples(bank_curves(_banks()[0]), 1)
    for row in x[:50]:
        assert shipped.chance(1, row) == pytest.approx(rebuilt.chance(1, row), abs=1e-6)
    assert sorted(shipped.epochs) == [1, 2, 3] and shipped.source == "shipped"


def test_leave_one_bank_out_auc_holds_its_measured_floor(table) -> None:
    """Measured (benchmarks/RESULTS.md): mean AUC 0.81 / 0.85 / 0.84 at epochs 1-3; at epoch 1
    the prior ranks lcbench-126026 (0.72 vs the raw value's 0.47) and lcbench-7593 (0.47 vs 0.14)
    far better than the raw value."""
    means = [np.mean([row[e][0] for row in table.values()]) for e in (1, 2, 3)]
    assert means[0] >= 0.78 and means[1] >= 0.82 and means[2] >= 0.82, means
    assert table["lcbench-126026"][1][0] >= 0.65 > table["lcbench-126026"][1][1]
    assert table["lcbench-7593"][1][0] >= 0.4 > table["lcbench-7593"][1][1]
    assert np.mean([row[1][0] - row[1][1] for row in table.values()]) > 0.05  # beats the raw value


def test_the_prior_is_calibrated_on_banks_it_never_saw() -> None:
    """Epoch 1, pooled over the banks (each weighs the same), each judged by the prior learned
    without it: the mean chance is the observed rate, low chances are rare successes."""
    chances, labels, weights = [], [], []
    for bank in _banks():
        x, y = examples(bank_curves(bank), 1)
        model = prior_without(bank.name)
        chances += [model.chance(1, row) for row in x]
        labels += list(y)
        weights += [1.0 / len(y)] * len(y)
    p, y, w = np.array(chances), np.array(labels), np.array(weights)
    assert abs(np.average(p, weights=w) - np.average(y, weights=w)) < 0.03
    low, high = p < 0.02, p >= 0.2
    assert np.average(y[low], weights=w[low]) < 0.05
    assert np.average(y[high], weights=w[high]) > 0.25


def test_a_stored_prior_reads_back_and_refuses_another_version() -> None:
    model = prior_without("digits")
    again = PriorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.epochs == model.epochs and again.source == model.source
    with pytest.raises(ValueError, match="prior version must be 1"):
        PriorModel.from_dict({**model.to_dict(), "version": 99})


def _observe_first_epochs(policy, bank, n: int, epochs: int) -> dict[str, list]:
    """Feed the first ``epochs`` of ``n`` configurations' seed-0 runs, trial by trial."""
    decisions: dict[str, list] = {}
    for i, curves in enumerate(bank.configs[:n]):
        key = f"t{i}"
        policy.add(key, curves.config)
        run = curves.runs[0]
        for epoch in range(1, epochs + 1):
            d = policy.observe(key, epoch, run.val_loss[epoch - 1], run.val_acc[epoch - 1])
            decisions.setdefault(key, []).append(d)
            if d.action != CONTINUE:
                break
    return decisions


def test_the_policy_cuts_what_the_prior_gives_no_chance_and_says_so() -> None:
    bank = load_bank(CURVES / "lcbench" / "lcbench-126026.jsonl.gz")
    settings = {"prior": "shipped", "prior_cut": 0.02}
    args = {"mode": "max", "chance": None, "budget": 52, "total_epochs": 200 * 52}
    with_prior = policy_from_settings(settings, prior=prior_without(bank.name), **args)
    without = policy_from_settings({}, **args)
    cut = _observe_first_epochs(with_prior, bank, 60, 1)
    plain = _observe_first_epochs(without, bank, 60, 1)
    by_prior = [k for k, ds in cut.items() if ds[-1].reason.startswith("prior at epoch 1: ")]
    assert by_prior and all(cut[k][-1].action == PRUNE for k in by_prior)
    assert all(plain[k][-1].action == CONTINUE for k in by_prior)  # the rungs alone kept them
    assert all("by the prior from banks" in cut[k][-1].reason for k in by_prior)  # its source, named
    assert decision_text(cut[by_prior[0]][-1]) == "pruned: prior at epoch 1"
    assert sum(d[-1].action == PRUNE for d in cut.values()) > sum(
        d[-1].action == PRUNE for d in plain.values()
    )


def test_the_prior_stops_counting_once_the_rung_has_its_own_evidence() -> None:
    rung = AshaRungs(1, 3, 52, adaptive=True)
    for i in range(12):  # 12 trials reached epoch 1 and epoch 3: the epoch-1 ranks are measured
        rung.judge(f"t{i}", 1, 0.5 + i / 100)
        rung.judge(f"t{i}", 3, 0.6 + i / 100)
    trial = _Trial(64)
    trial.record(1, 5.0, 0.01, 1.0, None, None, None)  # far below everything: the prior gives ~0
    rung.judge("new", 1, 0.01)
    guard = PriorGuard(prior_without(None), cut=0.5)
    assert guard.judge([rung], trial, 1.0, cut=False) is None
    fresh = AshaRungs(1, 3, 52, adaptive=True)
    fresh.judge("other", 1, 0.6)
    fresh.judge("new", 1, 0.01)
    assert (guard.judge([fresh], trial, 1.0, cut=False) or "").startswith("prior at epoch 1: ")


def test_load_prior_reads_shipped_a_bank_and_refuses_what_is_missing(tmp_path: Path) -> None:
    shipped = load_prior("shipped", launch_dir=str(tmp_path), tracking_uri=None)
    assert shipped is not None and shipped.source == "shipped"
    bank = load_prior(str(CURVES / "mnist1d.jsonl.gz"), launch_dir=str(tmp_path), tracking_uri=None)
    assert bank is not None and bank.source == "mnist1d.jsonl.gz" and 1 in bank.epochs
    assert load_prior(None, launch_dir=str(tmp_path), tracking_uri=None) is None
    with pytest.raises(ConfigError, match=r"^scheduler.prior: no such file: 'nope.json'$"):
        load_prior("nope.json", launch_dir=str(tmp_path), tracking_uri=None)
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^scheduler.prior: 'bad.json' gives no prior: prior version"):
        load_prior("bad.json", launch_dir=str(tmp_path), tracking_uri=None)


def test_replay_with_the_leave_one_bank_out_prior() -> None:
    """The replay's convergence_prior (the bank replayed is not in its prior) on digits: fewer
    epochs than the default policy, the same best final, the best configuration never cut."""
    bank = load_bank(CURVES / "digits.jsonl.gz")
    options = {"n_trials": 120, "workers": 4, "repeats": 3, "seed": 0, "max_pending": 4}
    replay.quiet_ray_info()
    prior = replay.replay_repeats(SCHEDULERS["convergence_prior"], bank, **options)
    plain = replay.replay_repeats(SCHEDULERS["convergence"], bank, **options)
    assert sum(s.epochs for s in prior) < sum(s.epochs for s in plain)
    assert [s.best_final_acc for s in prior] == [s.best_final_acc for s in plain]
    assert not any(s.best_config_pruned for s in prior)
    assert all(math.isfinite(s.best_final_acc) for s in prior)


def test_a_prior_of_the_same_model_family_ranks_better_than_the_raw_value() -> None:
    """Measured (benchmarks/RESULTS.md, --family): mean AUC 0.88 / 0.91 / 0.92 at epochs 1-3 against
    the raw value's 0.74 / 0.84 / 0.86; lcbench-126026 at epoch 1: 0.84 (raw 0.47)."""
    table = lobo_table(same_family=True)
    for epoch, floor in ((1, 0.85), (2, 0.88), (3, 0.89)):
        prior = np.mean([row[epoch][0] for row in table.values()])
        raw = np.mean([row[epoch][1] for row in table.values()])
        assert prior >= floor and prior > raw + 0.04, (epoch, prior, raw)
    assert table["lcbench-126026"][1][0] >= 0.8
