"""The Pareto front (analysis.pareto) on small tables whose front is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.pareto import dominates, pareto_front, pareto_mask

MAX_MIN = ("max", "min")  # e.g. val_acc up, params down


@pytest.mark.parametrize(
    ("points", "modes", "front"),
    [
        # accuracy (max) against size (min): the staircase 0, 1, 3 is the front; 2 and 4 are beaten
        ([(0.90, 100), (0.95, 400), (0.93, 500), (0.97, 900), (0.85, 150)], MAX_MIN, [0, 1, 3]),
        # both minimised
        ([(1, 5), (2, 2), (5, 1), (3, 3), (6, 6)], ("min", "min"), [0, 1, 2]),
        # equal points are both on the front (neither dominates the other)
        ([(0.9, 10), (0.9, 10), (0.8, 10)], MAX_MIN, [0, 1]),
        # equal on one objective, better on the other: dominated
        ([(0.9, 10), (0.9, 11)], MAX_MIN, [0]),
        # one point: the front
        ([(0.5, 3)], MAX_MIN, [0]),
        # no points
        ([], MAX_MIN, []),
        # three objectives
        ([(1, 1, 9), (1, 1, 8), (3, 2, 9), (2, 0, 9)], ("max", "min", "min"), [1, 2, 3]),
    ],
)
def test_front(points: list, modes: tuple, front: list[int]) -> None:
    assert pareto_front(points, modes) == front


def test_nonfinite_and_missing_are_never_on_the_front_and_dominate_nothing() -> None:
    points = [(math.nan, 1), (0.5, 100), (0.99, None), (math.inf, 1), (0.4, 200)]
    assert pareto_mask(points, MAX_MIN) == [False, True, False, False, False]
    # without the finite point, the finite loser is on the front: NaN/inf beat nobody
    assert pareto_front([(math.nan, 1), (0.4, 200)], MAX_MIN) == [1]


def test_dominates() -> None:
    assert dominates((0.9, 10), (0.8, 10), MAX_MIN)
    assert not dominates((0.9, 10), (0.9, 10), MAX_MIN)
    assert not dominates((0.9, 10), (0.95, 5), MAX_MIN)
    assert not dominates((math.nan, 1), (0.1, 1000), MAX_MIN)


def test_front_matches_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(0)
    points = rng.integers(0, 6, size=(60, 2)).tolist()  # many ties
    modes = ("max", "min")
    brute = [i for i, p in enumerate(points) if not any(dominates(q, p, modes) for q in points)]
    assert pareto_front(points, modes) == brute


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        pareto_front([(1, 2)], ("max", "up"))
