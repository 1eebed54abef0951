"""ASHA-style rungs over plain numbers (pure)."""

import json
import math

import pytest

from orchestrator.policy.rules import Reading
from orchestrator.policy.rungs import AshaRungs, CostRungs


def test_rungs_sit_at_geometric_epochs():
    assert AshaRungs(1, 3, 30).rungs == [1, 3, 9, 27]
    assert AshaRungs(2, 2, 10).rungs == [2, 4, 8]


def test_the_first_value_passes_then_the_bottom_is_cut_as_ray_asha_cuts():
    rule = AshaRungs(1, 2, 8)
    assert not rule.should_prune("a", 1, 0.5)  # nothing recorded before it
    assert not rule.should_prune("b", 1, 0.9)  # at least the median of [0.5]
    assert rule.should_prune("c", 1, 0.6)  # below the median of [0.5, 0.9] (0.7)
    assert not rule.should_prune("d", 1, 0.95)
    assert not rule.should_prune("c", 2, 0.0), "epoch 2 is not a rung"
    assert not rule.should_prune("c", 1, 0.0), "a trial is judged once per rung"


def test_the_cutoff_interpolates_like_numpy_percentile():
    rule = AshaRungs(1, 3, 30)
    for tid, value in zip("abcde", (0.1, 0.2, 0.3, 0.4, 0.5), strict=True):
        rule.should_prune(tid, 1, value)
    assert rule.cutoff(1) == pytest.approx(0.1 + (2 / 3) * 4 * 0.1)  # numpy: 0.3667
    assert rule.cutoff(3) is None


def test_keep_sets_the_share_that_passes():
    loose, strict = AshaRungs(1, 3, 30, keep=0.9), AshaRungs(1, 3, 30, keep=1 / 9)
    for rule in (loose, strict):
        for i in range(9):
            rule.should_prune(f"t{i}", 1, i / 10)
    assert strict.cutoff(1) == pytest.approx(0.8 * 8 / 9) and loose.cutoff(1) == pytest.approx(0.08)
    assert not loose.should_prune("x", 1, 0.2) and strict.should_prune("x", 1, 0.65)


def test_nan_counts_as_worst_and_state_round_trips():
    rule = AshaRungs(1, 2, 8)
    for tid, value in (("a", 0.3), ("b", 0.4)):
        rule.should_prune(tid, 1, value)
    assert rule.should_prune("n", 1, math.nan)
    assert not rule.should_prune("m", 2, math.nan), "the first value at a rung passes, even NaN"
    assert rule.cutoff(2) == -math.inf and not rule.should_prune("o", 2, math.nan)
    copy = AshaRungs(1, 2, 8)
    copy.load_state_dict(json.loads(json.dumps(rule.state_dict())))
    assert copy.recorded == rule.recorded and copy.seen == rule.seen
    assert copy.should_prune("z", 1, 0.0) == AshaRungs.should_prune(rule, "z", 1, 0.0)


@pytest.mark.parametrize(
    ("args", "kw", "message"),
    [
        ((0, 2, 8), {}, "grace_period"),
        ((1, 1, 8), {}, "reduction_factor"),
        ((5, 2, 3), {}, "max_t"),
        ((1, 2, 8), {"keep": 0.0}, "keep"),
        ((1, 2, 8), {"keep": 1.5}, "keep"),
    ],
)
def test_bad_arguments(args, kw, message):
    with pytest.raises(ValueError, match=message):
        AshaRungs(*args, **kw)


def test_compute_rungs_wait_for_their_unit_then_judge_at_equal_training_time():
    rule = CostRungs(1, 3, 30, calibration=3)
    for seconds in (2.0, 10.0, 4.0):  # the first epochs of three trials
        assert rule.unit is None and not rule.should_prune("early", 100.0, 0.0), "no cut before the unit"
        rule.calibrate(seconds)
    rule.calibrate(99.0)  # later first epochs change nothing
    assert rule.unit == 4.0 and rule.durations == [2.0, 10.0, 4.0]
    # Cheap trials: one epoch of 4 s reaches the rung at 1 unit, three reach the one at 3.
    assert not rule.should_prune("a", 4.0, 0.5) and not rule.should_prune("b", 4.0, 0.7)
    assert not rule.should_prune("a", 12.0, 0.8) and not rule.should_prune("b", 12.0, 0.9)
    # A trial whose one epoch costs 12 s is judged at the 3-unit rung, against 0.8 and 0.9 there,
    # not at the 1-unit rung, even though it has trained one epoch like a and b had there.
    assert rule.should_prune("slow", 12.0, 0.75)
    assert not rule.should_prune("slow", 13.0, 0.0), "judged once per rung"
    assert not rule.should_prune("slow", 35.0, 0.1), "the first value at the 9-unit rung passes"


def test_compute_rungs_ignore_bad_durations_and_round_trip():
    rule = CostRungs(1, 2, 8, calibration=2)
    for bad in (None, math.nan, -1.0, 0.0, math.inf):
        rule.calibrate(bad)
    assert rule.durations == []
    rule.calibrate(1.0)
    rule.calibrate(3.0)
    assert rule.unit == 2.0  # the median of an even count is the mean of the middle two
    assert not rule.should_prune("a", 2.0, 0.4) and not rule.should_prune("b", 2.0, 0.6)
    assert rule.should_prune("n", 2.5, math.nan), "NaN is the worst value"
    assert not rule.should_prune("c", math.nan, 0.0)
    copy = CostRungs(1, 2, 8, calibration=2)
    copy.load_state_dict(json.loads(json.dumps(rule.state_dict())))
    assert copy.unit == rule.unit and copy.durations == rule.durations
    assert copy.should_prune("z", 2.0, 0.1) == CostRungs.should_prune(rule, "z", 2.0, 0.1) is True
    with pytest.raises(ValueError, match="calibration"):
        CostRungs(1, 2, 8, calibration=0)


def test_a_value_cut_early_would_pass_once_lower_values_reach_its_rung():
    """Freeze-thaw's promotion: the cutoff a paused value faced moves as later values arrive."""
    rungs = AshaRungs(1, 3, 27)
    for tid, value in (("a", 0.9), ("b", 0.8)):
        rungs.should_prune(tid, 1, value)
    assert rungs.should_prune("c", 1, 0.7)  # below the top third of (0.8, 0.9)
    assert rungs.last_cutoff == pytest.approx(0.8 + (0.9 - 0.8) * (2 / 3 * 1))
    assert not rungs.would_pass(Reading("c", 1, 0.0, 0.7, 0.0))
    for tid, value in (("d", 0.1), ("e", 0.2), ("f", 0.3), ("g", 0.4)):
        rungs.should_prune(tid, 1, value)
    # the others now: 0.1 .. 0.4, 0.8, 0.9: 0.7 is within their top third
    assert rungs.would_pass(Reading("c", 1, 0.0, 0.7, 0.0))
    assert not rungs.would_pass(Reading("c", 3, 0.0, 0.7, 0.0))  # never judged at epoch 3
    assert not rungs.would_pass(Reading("d", 1, 0.0, 0.1, 0.0))
    assert rungs.would_pass(Reading("d", 1, 0.0, 0.1, 0.0), slack=0.7)


def test_a_rung_says_how_many_values_a_judgement_compared_with_and_when_that_is_settled():
    rungs = AshaRungs(1, 3, 30)
    assert rungs.settled == 9 and AshaRungs(1, 2, 30).settled == 4  # reduction_factor**2 values
    assert AshaRungs(1, 3, 30, settled=5).settled == 5
    for i, value in enumerate((0.5, 0.6, 0.7)):
        rungs.should_prune(f"t{i}", 1, value)
        assert rungs.last_peers == i  # the values recorded there before it
    assert rungs.last_cutoff is not None
    rungs.should_prune("t0", 1, 0.9)  # judged once per trial and rung: not judged again
    assert rungs.last_peers == 0 and rungs.last_cutoff is None and rungs.recorded[1] == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="settled"):
        AshaRungs(1, 3, 30, settled=0)
