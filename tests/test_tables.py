"""Factor tables for any hyperparameter: a hand-made sweep of free-form names, numbers worked out by hand."""

import json
import math

import pytest

from analysis.curves import AttemptCurve
from analysis.factors import NOT_SET, bin_edges, free_factor, free_factors
from analysis.records import SweepRecord, TrialRecord
from analysis.report import FACTOR_HEADERS, build

# Eight trials; trial i ends at FINALS[i]. Even trials are flat (a plateau from epoch 1:
# converged at 1), odd ones rise 0.05 an epoch for 10 epochs (no plateau: not converged).
FINALS = [0.60, 0.64, 0.68, 0.72, 0.76, 0.80, 0.84, 0.88]
ALPHA = [0.5, 0.001, 0.02, 0.002, 0.1, 0.01, 0.005, 0.05]  # 3 decades: binned on a log scale
SHIFT = [-20.0, -16.0, -12.0, -8.0, 0.0, 8.0, 20.0, 40.0]  # negative: binned on a linear scale
KERNEL = ["rbf", "linear", "rbf", "poly", "rbf", "linear", "rbf", "linear"]
UNITS = [32, 64, 128, 32, 64, 128, 32, 64]  # integers, 3 values: by value
SHUFFLE = [True, False] * 4
MOMENTUM = [0.9, 0.99, 0.9, 0.99, 0.9, "absent", "absent", None]  # not set in trials 5, 6, 7
LR = [0.001, 0.01] * 4  # the named learning-rate decade table, no free "lr" table


def _params(i):
    p = {"alpha": ALPHA[i], "shift": SHIFT[i], "kernel": KERNEL[i], "units": UNITS[i], "gamma": 0.5,
         "shuffle": SHUFFLE[i], "lr": LR[i]}  # fmt: skip
    if MOMENTUM[i] != "absent":
        p["momentum"] = MOMENTUM[i]
    return p


def _curve(i):
    if i % 2 == 0:
        return [FINALS[i]] * 6
    return [round(FINALS[i] - 0.05 * (10 - e), 4) for e in range(1, 11)]


def _trial(i):
    attempt = AttemptCurve(attempt=0, seed=i)
    for e, v in enumerate(_curve(i), start=1):
        attempt.add(e, {"val_acc": v, "train_loss": 2.0 * math.exp(-0.3 * e), "time_this_iter_s": 0.5})
    return TrialRecord(
        trial_id=f"t{i}",
        name=f"trial_{i:04d}",
        params=_params(i),
        status="CONVERGED" if i % 2 == 0 else "COMPLETED",
        budget=10,
        attempts=[attempt],
        verdict="converged" if i % 2 == 0 else "progressing",
    )


@pytest.fixture
def report():
    sweep = SweepRecord("freeform", "val_acc", "max", [_trial(i) for i in range(8)], source="hand-made")
    return build(sweep, with_importance=False)


def _rows(report, title):
    table = {t.title: t for t in report.factors}[f"by {title}"]
    assert table.headers == (title, *FACTOR_HEADERS)
    return {row[0]: row[1:] for row in table.rows}, [row[0] for row in table.rows]


def test_every_hyperparameter_that_varied_has_a_table_sorted_by_name(report):
    assert [s.converged for s in report.stats] == [i % 2 == 0 for i in range(8)]
    titles = [t.title for t in report.factors]
    assert titles == ["by learning-rate decade", "by alpha", "by kernel", "by momentum", "by shift",
                      "by shuffle", "by units"]  # fmt: skip
    assert report.fixed == {"gamma": "0.5"}  # constant: no table, in the headline
    assert "fixed: gamma=0.5" in report.text()


def test_a_numeric_hyperparameter_over_decades_is_binned_on_a_log_scale(report):
    # log10(sorted alpha) = -3, -2.699, -2.301, -2, -1.699, -1.301, -1, -0.301; numpy's quantiles
    # at positions 1.75, 3.5, 5.25: -2.4005 -> 0.003978 -> 0.004; -1.8495 -> 0.01414 -> 0.014;
    # -1.2258 -> 0.05946 -> 0.059 (two significant digits)
    assert bin_edges(ALPHA) == [0.001, 0.004, 0.014, 0.059, 0.5]
    rows, order = _rows(report, "alpha")
    assert order == ["[0.001, 0.004)", "[0.004, 0.014)", "[0.014, 0.059)", "[0.059, 0.5]"]
    # trials: [0.001, 0.004) 1, 3; [0.004, 0.014) 5, 6; [0.014, 0.059) 2, 7; [0.059, 0.5] 0, 4
    assert rows["[0.001, 0.004)"][:5] == (2, 0, None, 0.72, pytest.approx(0.68))
    assert rows["[0.004, 0.014)"][:5] == (2, 1, 1.0, 0.84, pytest.approx(0.82))
    assert rows["[0.014, 0.059)"][:5] == (2, 1, 1.0, 0.88, pytest.approx(0.78))
    assert rows["[0.059, 0.5]"][:5] == (2, 2, 1.0, 0.76, pytest.approx(0.68))
    assert all(r[-1] == 0.5 for r in rows.values())  # median s/epoch


def test_a_numeric_hyperparameter_within_a_decade_or_not_positive_is_binned_linearly(report):
    # quantiles at positions 1.75, 3.5, 5.25: -16 + 0.75 * 4 = -13; (-8 + 0) / 2 = -4; 8 + 0.25 * 12 = 11
    assert bin_edges(SHIFT) == [-20, -13, -4, 11, 40]
    rows, order = _rows(report, "shift")
    assert order == ["[-20, -13)", "[-13, -4)", "[-4, 11)", "[11, 40]"]
    assert [r[0] for r in rows.values()] == [2, 2, 2, 2]
    assert rows["[11, 40]"][3:5] == (0.88, pytest.approx(0.86))


def test_categorical_integer_and_boolean_hyperparameters_are_grouped_by_value(report):
    kernel, order = _rows(report, "kernel")
    assert order == ["linear", "poly", "rbf"]
    assert {k: r[:2] for k, r in kernel.items()} == {"linear": (3, 0), "poly": (1, 0), "rbf": (4, 4)}
    assert kernel["linear"][3:5] == (0.88, 0.80)
    units, order = _rows(report, "units")
    assert order == ["32", "64", "128"]  # numeric order, not text order
    assert {k: r[0] for k, r in units.items()} == {"32": 3, "64": 3, "128": 2}
    assert units["32"][3] == 0.84 and units["128"][3] == 0.80
    shuffle, order = _rows(report, "shuffle")
    assert order == ["False", "True"]
    assert shuffle["True"][:3] == (4, 4, 1.0) and shuffle["False"][:3] == (4, 0, None)


def test_trials_that_do_not_set_a_hyperparameter_are_one_row_listed_last(report):
    # momentum: 0.9 in trials 0, 2, 4; 0.99 in 1, 3; missing from 5 and 6, None in 7
    rows, order = _rows(report, "momentum")
    assert order == ["0.9", "0.99", "(not set)"]
    assert {k: r[0] for k, r in rows.items()} == {"0.9": 3, "0.99": 2, "(not set)": 3}
    assert rows["(not set)"][1:5] == (1, 1.0, 0.88, 0.84)
    assert sum(r[0] for r in rows.values()) == len(report.stats)


def test_the_named_tables_keep_the_built_in_names(report):
    decades, _ = _rows(report, "learning-rate decade")
    assert {k: r[0] for k, r in decades.items()} == {"[1e-3, 1e-2)": 4, "[1e-2, 1e-1)": 4}
    assert not {"by lr", "by gamma"} & {t.title for t in report.factors}


def test_markdown_and_json_carry_the_new_tables(report):
    md = report.markdown()
    assert "### by alpha" in md and "| [0.001, 0.004) | 2 | 0 | - | 0.72 | 0.68 |" in md
    assert "| (not set) | 3 | 1 | 1 | 0.88 | 0.84 |" in md
    data = json.loads(json.dumps(report.as_dict()))
    tables = {t["title"]: t for t in data["tables"]}
    assert tables["by units"]["headers"] == ["units", *FACTOR_HEADERS]
    assert [r[0] for r in tables["by alpha"]["rows"]] == ["[0.001, 0.004)", "[0.004, 0.014)",
                                                          "[0.014, 0.059)", "[0.059, 0.5]"]  # fmt: skip


def test_a_free_factor_is_binned_only_when_it_takes_many_numeric_values():
    def groups(values):
        _, key, label = free_factor("x", values)
        return [label(key({"x": v})) for v in values]

    # repeated floats (5 distinct over 10 trials) and up to 4 distinct numbers: by value
    assert groups([0.1, 0.2, 0.3, 0.4, 0.5] * 2)[:5] == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    assert groups([1.5, 2.5, 3.5, 4.5]) == ["1.5", "2.5", "3.5", "4.5"]
    # integers with 8 distinct values: by value; with 12 (a decade and more): binned
    assert groups(list(range(1, 9))) == [str(i) for i in range(1, 9)]
    many = list(range(10, 130, 10))
    # log10 quantiles at positions 2.75, 5.5, 8.25 of 10..120: 37.22 -> 37, 64.81 -> 65, 92.40 -> 92
    assert bin_edges(many) == [10, 37, 65, 92, 120]
    assert groups(many)[:4] == ["[10, 37)", "[10, 37)", "[10, 37)", "[37, 65)"]
    assert groups(many)[-1] == "[92, 120]"
    # 5 distinct floats, none repeated: binned
    assert groups([0.1, 0.2, 0.3, 0.4, 0.5])[0].startswith("[0.1, ")


def test_odd_values_group_without_error():
    params = [{"layers": [64, 32], "x": float("nan"), "regularization": "a"},
              {"layers": [64, 32], "x": 1.0, "regularization": "b"},
              {"layers": [128], "x": float("nan")}]  # fmt: skip
    factors = {title: (key, label) for title, key, label in free_factors(params)}
    # a name that is a named factor's title gets its own title
    assert sorted(factors) == ["layers", "regularization (hyperparameter)", "x"]
    key, label = factors["layers"]
    assert [label(key(p)) for p in params] == ["[64, 32]", "[64, 32]", "[128]"]
    key, label = factors["x"]
    assert [label(key(p)) for p in params] == ["nan", "1.0", "nan"]
    key, label = factors["regularization (hyperparameter)"]
    assert key(params[2]) is NOT_SET and label(NOT_SET) == "(not set)"
    with pytest.raises(ValueError, match="finite"):
        bin_edges([1.0, float("inf")])


def test_the_seed_is_no_factor():
    """A restart sets a new seed in the trial's config: the seed says nothing about the configuration."""
    from analysis.factors import free_factors

    params = [{"seed": s, "units": u} for s, u in [(1, 8), (2, 16), (1287696695, 32)]]
    assert [title for title, _, _ in free_factors(params)] == ["units"]
