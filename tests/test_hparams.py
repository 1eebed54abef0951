"""Trial hyperparameters: defaults, domains, conversion (pure)."""

import pytest

from trainables.hparams import DOMAINS, TrialParams


def test_defaults_are_valid_and_every_field_has_a_domain():
    params = TrialParams()
    assert set(params.as_dict()) == set(DOMAINS)


def test_from_config_ignores_bookkeeping_and_converts_numbers():
    p = TrialParams.from_config({"lr": 1, "batch_size": 64.0, "run": {}, "attempt": 2})
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert p.batch_size == 64 and isinstance(p.batch_size, int)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", 0.0, "lr: must be > 0"),
        ("lr", float("nan"), "lr: must be finite"),
        ("momentum", 1.0, "momentum: must be < 1"),
        ("optimizer", "lbfgs", "optimizer: must be one of gd, sgd"),
        ("batch_size", 2.5, "batch_size: must be an integer"),
        ("epochs", 0, "epochs: must be >= 1"),
        ("dropout", 1.0, "dropout: must be < 1"),
        ("shuffle", 1, "shuffle: must be true or false"),
    ],
)
def test_bad_values_are_refused(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrialParams(**{key: value})
