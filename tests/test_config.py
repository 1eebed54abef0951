"""Composition and validation of every config, and fail-fast errors for bad input."""

import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from orchestrator.__main__ import main
from orchestrator.config import SweepConfig, check_result, load_config

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("trainable", "search", "scheduler", "cluster", "tracking", "experiment", "debug")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]) -> SweepConfig:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def test_default_config_validates():
    cfg = _compose([])
    assert cfg.trainable.dataset == "digits" and cfg.search.algorithm == "tpe"
    assert cfg.space.searched, "the default sweep searches something"


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in _options(g)])
def test_every_option_of_every_group_composes_and_validates(override):
    assert isinstance(_compose([override]), SweepConfig)


def test_required_groups_and_options_exist():
    for group, needed in {
        "trainable": {"mlp", "cnn"},
        "search": {"tpe", "random", "cmaes", "grid"},
        "scheduler": {"fifo", "asha", "median"},
        "cluster": {"local"},
        "tracking": {"mlflow"},
        "debug": {"default"},
    }.items():
        assert needed <= set(_options(group)), group
    assert _options("experiment"), "at least one experiment file"


def test_experiment_files_are_global_packages():
    for name in _options("experiment") + _options("debug"):
        group = "experiment" if (CONF / "experiment" / f"{name}.yaml").exists() else "debug"
        assert (CONF / group / f"{name}.yaml").read_text().startswith("# @package _global_")


def test_overrides_reach_the_config():
    cfg = _compose(
        [
            "trainable=cnn",
            "search=random",
            "num_samples=20",
            "trainable.epochs=15",
            "resources.cpus_per_trial=1",
            "resources.gpus_per_trial=0.25",
        ]
    )
    assert cfg.trainable.model == "cnn" and cfg.search.algorithm == "random"
    assert cfg.num_samples == 20 and cfg.trainable.epochs == 15
    assert cfg.resources.gpus_per_trial == 0.25


def test_a_hyperparameter_can_be_fixed_from_the_command_line():
    cfg = _compose(["trainable.hparams.lr=0.01"])
    assert cfg.space.fixed["lr"] == 0.01 and "lr" not in cfg.space.searched


def test_check_result_names_the_missing_key():
    result = {
        "epoch": 1,
        "train_loss": 1.0,
        "val_loss": 1.0,
        "val_acc": 0.5,
        "grad_norm": 1.0,
        "dead_frac": 0.0,
        "lr": 0.1,
        "attempt": 0,
    }
    with pytest.raises(KeyError, match="'seed'"):
        check_result(result)
    check_result({**result, "seed": 3})


BAD = [
    ("trainable=nope", "trainable=nope: no such option (choose from cnn, mlp)"),
    ("search=nope", "search=nope: no such option"),
    ("bogus=1", "Could not override 'bogus'"),
    ("+bogus=1", "bogus: unknown key"),
    ("+trainable.bogus=1", "trainable.bogus: unknown key"),
    ("trainable.hparams.lr.low=0", "trainable.hparams.lr.low: must be > 0 for a log scale"),
    ("trainable.hparams.lr.low=-0.1", "trainable.hparams.lr.low: must be > 0 for a log scale"),
    ("trainable.hparams.dropout.low=0.6", "trainable.hparams.dropout: low must be < high"),
    ("trainable.hparams.optimizer.values=[]", "trainable.hparams.optimizer.values: must be a non-empty list"),
    ("trainable.epochs=0", "trainable.epochs: must be >= 1, got 0"),
    ("num_samples=0", "num_samples: must be >= 1, got 0"),
    ("resources.cpus_per_trial=-1", "resources.cpus_per_trial: must be >= 0"),
    ("resources.gpus_per_trial=-0.5", "resources.gpus_per_trial: must be >= 0"),
    ("resources.gpus_per_trial=1.5", "resources.gpus_per_trial: above 1 it must be a whole number"),
    ("seed=abc", "seed: must be an integer, got 'abc'"),
    ("metric=accuracy", "metric: must be one of"),
    ("mode=min", "mode: val_acc is better when max"),
    ("trainable.model=resnet", "trainable.model: must be one of mlp, cnn"),
    ("trainable.data.val_fraction=1.5", "trainable.data.val_fraction: must be in (0, 1)"),
    ("trainable.dataset=mnist", "trainable.data.root: required"),
    ("trainable.dataset=imagenet", "trainable.dataset: unknown dataset 'imagenet'"),
    ("trainable.data.root=/nonexistent/dir", None),  # root is only checked for file datasets
    ("tracking.uri=notascheme://x", "tracking.uri: cannot use 'notascheme://x'"),
    ("storage.path=/proc/nope", "storage.path: cannot write"),
    ("resources.cpus_per_trial=64", "resources.cpus_per_trial: 64 but the cluster has"),
]


@pytest.mark.parametrize(("override", "message"), [b for b in BAD if b[1]])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(override, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(
        "sys.argv", ["orchestrator", override, "num_samples=1" if "num_samples" not in override else "seed=0"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    assert message in errors[0]
    leftovers = set(os.listdir(tmp_path))
    assert not leftovers & {"results", "outputs", "mlruns", "mlartifacts"}, leftovers
    if (tmp_path / "mlflow.db").exists():  # a store may exist, but never a run in it
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        experiments = client.search_experiments()
        assert not client.search_runs([e.experiment_id for e in experiments])


def test_config_yaml_is_a_defaults_list():
    data = yaml.safe_load((CONF / "config.yaml").read_text())
    groups = {next(iter(d)) for d in data["defaults"] if isinstance(d, dict)}
    assert {"trainable", "search", "scheduler", "cluster", "tracking", "experiment", "debug"} <= groups
