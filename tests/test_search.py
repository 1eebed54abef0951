"""The searcher: YAML spaces as Optuna distributions, seeded samplers, grid capping (no Ray cluster)."""

import optuna
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator.config import load_config
from orchestrator.search import build_searcher, num_trials, optuna_space
from trainables.hparams import TrialParams


def _config(overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def test_yaml_distributions_become_optuna_distributions():
    space = optuna_space(_config([]).space)
    assert space["lr"] == FloatDistribution(1e-4, 3e-2, log=True)
    assert space["hidden_layers"] == IntDistribution(1, 3)
    assert space["dropout"] == FloatDistribution(0.0, 0.5)
    assert space["optimizer"] == CategoricalDistribution(["sgd_momentum", "adam", "rmsprop"])


def _suggestions(cfg, n, values=None):
    searcher = build_searcher(cfg)
    out = []
    for i in range(n):
        params = searcher.suggest(f"t{i}")
        out.append(params)
        searcher.on_trial_complete(f"t{i}", {cfg.metric: (values or [0.5] * n)[i]})
    return out


@pytest.mark.parametrize("algorithm", ["tpe", "random", "cmaes", "grid"])
def test_every_sampler_suggests_valid_seeded_configurations(algorithm):
    cfg = _config([f"search={algorithm}"])
    first = _suggestions(cfg, 10, [0.1 * i for i in range(10)])
    again = _suggestions(cfg, 10, [0.1 * i for i in range(10)])
    assert first == again, "the same sweep seed gives the same suggestions"
    assert [p["trial_index"] for p in first] == list(range(10))
    for params in first:
        hp = TrialParams.from_config({**cfg.space.fixed, **params})
        assert set(cfg.space.searched) <= set(params)
        assert hp.lr > 0
    other = _suggestions(_config([f"search={algorithm}", "seed=1"]), 10)
    assert other != first


def test_grid_search_covers_the_grid_once_and_caps_num_samples():
    overrides = [
        "search=grid",
        "search.grid_points=2",
        "num_samples=100",
        "trainable.hparams.optimizer={type:choice,values:[sgd,adam]}",
        "trainable.hparams.lr={type:loguniform,low:0.001,high:0.1}",
        "trainable.hparams.batch_size=32",
        "trainable.hparams.hidden_layers=1",
        "trainable.hparams.width=32",
        "trainable.hparams.activation=relu",
        "trainable.hparams.batch_norm=false",
        "trainable.hparams.dropout=0.0",
        "trainable.hparams.weight_decay=0.0",
    ]
    cfg = _config(overrides)
    assert num_trials(cfg) == 4
    seen = {(p["optimizer"], p["lr"]) for p in _suggestions(cfg, 4)}
    assert seen == {(o, lr) for o in ("sgd", "adam") for lr in (0.001, 0.1)}


def test_tpe_learns_from_results():
    cfg = _config(["search=tpe", "search.n_startup_trials=5"])
    searcher = build_searcher(cfg)
    for i in range(30):
        params = searcher.suggest(f"t{i}")
        value = 1.0 - abs(params["lr"] - 0.01) * 30  # best near lr = 0.01
        searcher.on_trial_complete(f"t{i}", {"val_acc": value})
    study = searcher._ot_study
    late = [t.params["lr"] for t in study.trials[20:]]
    early = [t.params["lr"] for t in study.trials[:5]]
    assert sum(abs(lr - 0.01) for lr in late) / len(late) < sum(abs(lr - 0.01) for lr in early) / len(early)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_a_restart_or_a_replayed_epoch_is_not_told_to_optuna_twice():
    """Optuna keeps one intermediate value per step (and warns on a repeated one): a restart's
    epochs (training_iteration from 1 again) and an epoch replayed after a restore are not told;
    the grid sampler's last tell raises nothing (Optuna 5.1's Study.stop outside optimize)."""
    import warnings

    cfg = _config(["search=grid", "num_samples=2", "~trainable.hparams.lr", "+trainable.hparams.lr=0.01"])
    searcher = build_searcher(cfg)
    params = searcher.suggest("t0")
    assert params is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a repeated step would warn: make it fail here
        for step, attempt in [(1, 0), (2, 0), (2, 0), (1, 1), (2, 1), (3, 1)]:
            result = {"val_acc": 0.1 * step, "training_iteration": step, "attempt": attempt}
            searcher.on_trial_result("t0", result)
        searcher.on_trial_complete("t0", {"val_acc": 0.9, "training_iteration": 3, "attempt": 1})
    (trial,) = searcher._ot_study.trials
    assert trial.intermediate_values == {1: 0.1, 2: 0.2} and trial.value == 0.9
