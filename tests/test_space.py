"""Search spaces from YAML: parsing, validation messages, grid values (pure, no Ray)."""

import math

import pytest

from orchestrator.errors import ConfigError
from orchestrator.space import Dist, parse_space


def test_fixed_and_searched_values_are_split():
    space = parse_space(
        {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
            "hidden_layers": {"type": "int", "low": 1, "high": 4},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5, "step": 0.1},
            "width": 64,
            "batch_norm": None,
        }
    )
    assert space.fixed == {"width": 64}
    assert set(space.searched) == {"lr", "optimizer", "hidden_layers", "dropout"}
    assert space.searched["lr"].log and space.searched["lr"].low == 1e-4
    assert space.searched["hidden_layers"].step == 1
    assert "batch_norm" not in space.fixed  # null drops it


def test_grid_values():
    space = parse_space(
        {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
            "hidden_layers": {"type": "int", "low": 1, "high": 3},
            "width": {"type": "int", "low": 8, "high": 128, "log": True},
            "activation": {"type": "choice", "values": ["relu", "tanh"]},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.4},
        }
    )
    grid = {n: d.grid(3) for n, d in space.searched.items()}
    assert grid["lr"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert grid["hidden_layers"] == [1, 2, 3]
    assert grid["width"] == [8, 32, 128]
    assert grid["activation"] == ["relu", "tanh"]
    assert grid["dropout"] == pytest.approx([0.0, 0.2, 0.4])
    assert space.grid_size(3) == 3 * 3 * 3 * 2 * 3
    assert math.prod(len(v) for v in grid.values()) == space.grid_size(3)


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        (
            {"lr": {"type": "loguniform", "low": 0, "high": 1}},
            "trainable.hparams.lr.low: must be > 0 for a log scale",
        ),
        ({"lr": {"type": "uniform", "low": 0.1, "high": 0.01}}, "trainable.hparams.lr: low must be < high"),
        ({"lr": {"type": "uniform", "low": 0.1, "high": 0.1}}, "low must be < high"),
        ({"lr": {"type": "uniform", "low": -1, "high": 0.1}}, "trainable.hparams.lr.low: lr must be > 0"),
        (
            {"optimizer": {"type": "choice", "values": []}},
            "trainable.hparams.optimizer.values: must be a non-empty list",
        ),
        (
            {"optimizer": {"type": "choice", "values": ["adam", "lbfgs"]}},
            "values[1]: optimizer must be one of",
        ),
        ({"optimizer": {"type": "choice", "values": ["adam", "adam"]}}, "must not repeat"),
        ({"lr": {"type": "gaussian", "low": 0.1, "high": 1}}, "trainable.hparams.lr.type: must be one of"),
        ({"lr": {"type": "uniform", "high": 1}}, "trainable.hparams.lr.low: required"),
        (
            {"lr": {"type": "uniform", "low": 0.1, "high": 1, "bins": 3}},
            "trainable.hparams.lr.bins: unknown key",
        ),
        ({"hidden_layers": {"type": "uniform", "low": 1, "high": 3}}, "is an integer; use int or choice"),
        ({"lr": {"type": "int", "low": 1, "high": 3}}, "is a float; use uniform or loguniform"),
        (
            {"hidden_layers": {"type": "int", "low": 1.5, "high": 3}},
            "trainable.hparams.hidden_layers.low: hidden_layers must be an integer",
        ),
        (
            {"dropout": {"type": "uniform", "low": 0.0, "high": 1.0}},
            "trainable.hparams.dropout.high: dropout must be < 1",
        ),
        (
            {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1, "step": 0.01}},
            "cannot be combined with a log scale",
        ),
        ({"activation": {"type": "uniform", "low": 0, "high": 1}}, "takes str values; use choice"),
        ({"bogus": 3}, "trainable.hparams.bogus: unknown hyperparameter"),
        ({"batch_size": 0}, "trainable.hparams.batch_size: batch_size must be >= 1, got 0"),
        ({"batch_norm": "yes"}, "batch_norm must be true or false"),
        ({"lr": {"type": "uniform", "low": "a", "high": 1}}, "trainable.hparams.lr.low: must be a number"),
    ],
)
def test_bad_spaces_name_the_key(hparams, message):
    with pytest.raises(ConfigError) as err:
        parse_space(hparams)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "dist, value, problem",
    [
        (Dist("uniform", low=0.0, high=0.5, step=0.1), 0.3, None),
        (Dist("uniform", low=0.0, high=0.5, step=0.1), 0.35, "not on the grid of step 0.1 from 0"),
        (Dist("loguniform", low=1e-4, high=3e-2, log=True), 0.5, "outside [0.0001, 0.03]"),
        (Dist("loguniform", low=1e-4, high=3e-2, log=True), "0.01", "not a finite number"),
        (Dist("int", low=1, high=4, step=1.0), 2.5, "not a whole number"),
        (Dist("int", low=1, high=4, step=1.0), True, "not a finite number"),
        (Dist("choice", values=(16, 32)), 32, None),
        (Dist("choice", values=(16, 32)), 32.0, "not one of [16, 32]"),
    ],
)
def test_a_value_a_distribution_cannot_draw_says_why(dist, value, problem):
    """What an enqueued configuration (search.enqueue) is checked with."""
    assert dist.problem(value) == problem
