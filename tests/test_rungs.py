"""ASHA-style rungs over plain numbers (pure)."""

import json
import math

import pytest

from orchestrator.rungs import AshaRungs


def test_rungs_sit_at_geometric_epochs():
    assert AshaRungs(1, 3, 30).rungs == [1, 3, 9, 27]
    assert AshaRungs(2, 2, 10).rungs == [2, 4, 8]


def test_first_values_pass_then_the_bottom_is_cut():
    rule = AshaRungs(1, 2, 8)
    assert not rule.should_prune("a", 1, 0.5)  # fewer than reduction_factor values
    assert not rule.should_prune("b", 1, 0.9)
    assert rule.should_prune("c", 1, 0.1)  # below the median of [0.1, 0.5, 0.9]
    assert not rule.should_prune("d", 1, 0.95)
    assert not rule.should_prune("c", 2, 0.0), "epoch 2 is not a rung"
    assert not rule.should_prune("c", 1, 0.0), "a trial is judged once per rung"


def test_nan_counts_as_worst_and_state_round_trips():
    rule = AshaRungs(1, 2, 8)
    for tid, value in (("a", 0.3), ("b", 0.4)):
        rule.should_prune(tid, 1, value)
    assert rule.should_prune("n", 1, math.nan)
    copy = AshaRungs(1, 2, 8)
    copy.load_state_dict(json.loads(json.dumps(rule.state_dict())))
    assert copy.recorded == rule.recorded and copy.seen == rule.seen
    assert copy.should_prune("z", 1, 0.0) == AshaRungs.should_prune(rule, "z", 1, 0.0)


@pytest.mark.parametrize(
    ("args", "message"), [((0, 2, 8), "grace_period"), ((1, 1, 8), "reduction_factor"), ((5, 2, 3), "max_t")]
)
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        AshaRungs(*args)
