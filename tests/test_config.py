"""Composition and validation of every config, and fail-fast errors for bad input."""

import dataclasses
import os
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from orchestrator.__main__ import main
from orchestrator.config import SweepConfig, load_config
from orchestrator.contract import contract_problem
from orchestrator.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("trainable", "search", "scheduler", "cluster", "tracking", "experiment", "debug")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _composed(overrides: list[str]):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _compose(overrides: list[str]) -> SweepConfig:
    return load_config(OmegaConf.to_container(_composed(overrides), resolve=True))


def test_default_config_validates():
    cfg = _compose([])
    assert cfg.trainable.dataset == "digits" and cfg.search.algorithm == "tpe"
    assert cfg.space.searched, "the default sweep searches something"


def _leaves(data: dict, prefix: str) -> list[tuple[str, object]]:
    """``{"a": {"b": 1}}`` -> ``[("prefix.a.b", 1)]``; a hyperparameter's distribution is one value."""
    out = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and ".hparams." not in path:
            out += _leaves(value, path)
        else:
            out.append((path, value))
    return out


def _at(data: dict, path: str) -> object:
    for part in path.split("."):
        data = data[part]
    return data


#: What an option cannot run without (a user's function names itself, its space, its metric).
NEEDS = {
    "trainable=function": [
        "trainable.fn=mypkg.train:train",
        "+trainable.hparams.lr={type:loguniform,low:1e-4,high:1e-1}",
        "metric=val_mae",
    ]
}


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in _options(g)])
def test_every_option_of_every_group_composes_and_validates(override):
    """Each option file's values reach the validated config (under its group, or at the top for
    ``# @package _global_`` files), e.g. ``trainable=cnn`` gives ``trainable.model == 'cnn'``."""
    group, option = override.split("=")
    text = (CONF / group / f"{option}.yaml").read_text()
    data = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k not in ("defaults", "hydra")}
    composed = dataclasses.asdict(_compose([override, *NEEDS.get(override, [])]))
    leaves = _leaves(data, "" if text.startswith("# @package _global_") else group)
    for path, value in leaves:
        if isinstance(value, str) and "${" in value:
            continue  # an interpolation: resolved against other keys
        got = _at(composed, path)
        if isinstance(value, str) and isinstance(got, float):
            value = float(value)  # YAML 1.1 reads 1e-3 as text; OmegaConf as a number
        assert got == value, f"{override}: {path} is {got!r}, the file says {value!r}"


#: Keys that name the option a group file is (its identity), not a default it repeats.
IDENTITY = {"trainable.model", "search.algorithm", "cluster.mode", "scheduler.name"}


@pytest.mark.parametrize("group", ["trainable", "search", "cluster", "tracking", "scheduler"])
def test_no_option_file_repeats_a_default_of_the_schemas(group):
    """One source for every default (orchestrator/schema.py, scheduler_schemas.py): a group's
    option files set only keys whose value differs from the schema's default."""
    from orchestrator.scheduler_schemas import SCHEDULER_SCHEMAS

    defaults = dataclasses.asdict(SweepConfig())
    repeated = []
    for option in _options(group):
        data = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
        if group == "scheduler":
            defaults["scheduler"] = dataclasses.asdict(SCHEDULER_SCHEMAS[option]())
        for path, value in _leaves({k: v for k, v in data.items() if k != "defaults"}, group):
            if path not in IDENTITY and ".hparams" not in path and _at(defaults, path) == value:
                repeated.append(f"{group}/{option}.yaml: {path}")
    assert repeated == []


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


def test_contract_problem_names_the_key_and_what_was_reported():
    result = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_acc": 0.5, "time_total_s": 3.0}
    assert contract_problem(result, "val_acc") is None
    assert contract_problem({**result, "val_acc": float("nan")}, "val_acc") is None  # evidence, not a break
    missing = contract_problem(result, "val_mae")
    assert missing == "val_mae: the trial did not report it (reported: epoch, train_loss, val_acc, val_loss)"
    no_loss = {k: v for k, v in result.items() if k != "val_loss"}
    assert contract_problem(no_loss, "val_acc").startswith("val_loss: the trial did not report it")
    assert contract_problem({**result, "val_acc": "0.5"}, "val_acc") == (
        "val_acc: the trial reported '0.5', not a number"
    )
    zeroth = contract_problem({**result, "epoch": 0}, "val_acc")
    assert zeroth.startswith("epoch: must be a whole number >= 1")
    assert contract_problem({**result, "val_acc": True}, "val_acc").endswith("not a number")


BAD = [
    ("trainable=nope", "trainable: no such option 'nope' (choose from cnn, function, mlp)"),
    ("search=nope", "search: no such option 'nope'"),
    ("bogus=1", "bogus: unknown key"),
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
    ("trainable.dataset=imagenet", "trainable.dataset: must be one of digits"),
    ("trainable.data.root=/nonexistent/dir", None),  # root is only checked for file datasets
    ("tracking.uri=notascheme://x", "tracking.uri: cannot use 'notascheme://x'"),
    ("storage.path=/proc/nope", "storage.path: cannot write"),
    ("resources.cpus_per_trial=64", "resources.cpus_per_trial: 64 but this machine has"),
    ("+trainable.hparams.warm_start={type:choice,values:[true,false]}",
     "trainable.hparams.warm_start: needs trainable.init_from (the weights a warm trial starts from)"),
    ("+trainable.hparams.warm_start={type:choice,values:[yes,no]}", "trainable.hparams.warm_start.values"),
    ("scheduler.prior=missing.json", "scheduler.prior: no such file: 'missing.json'"),
    ("scheduler.prior=nope", "scheduler.prior: must be shipped, mlflow:<experiment or sweep> or a file"),
    ("scheduler.prior=mlflow:", "scheduler.prior: mlflow: needs an experiment or sweep name"),
    ("scheduler.prior_cut=1.5", "scheduler.prior_cut: must be in [0, 1), got 1.5"),
    (
        "scheduler.prior=mlflow:no_such_experiment",
        "scheduler.prior: 'mlflow:no_such_experiment' gives no prior",
    ),
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


def test_each_scheduler_yaml_takes_every_key_and_default_from_its_schema():
    from orchestrator.scheduler_schemas import SCHEDULER_SCHEMAS

    for name, schema in SCHEDULER_SCHEMAS.items():
        listed = yaml.safe_load((CONF / "scheduler" / f"{name}.yaml").read_text())
        assert listed == {"defaults": [{"/schema/scheduler@_here_": name}, "_self_"], "name": name}
        composed = OmegaConf.to_container(_composed([f"scheduler={name}"]).scheduler)
        assert composed == dataclasses.asdict(schema()), name


def test_the_convergence_defaults_are_the_settings_and_policy_defaults():
    from analysis.convergence import Thresholds
    from orchestrator.policy import ConvergenceSettings, PolicyConfig

    scheduler = _compose([]).scheduler
    assert isinstance(scheduler, ConvergenceSettings) and scheduler.name == "convergence"
    assert scheduler.thresholds == dataclasses.asdict(Thresholds()), "every threshold, its default"
    assert ConvergenceSettings().policy_config(mode="max", chance=None) == PolicyConfig()
    assert scheduler.grace_period == 1 and _compose(["scheduler=asha"]).scheduler.grace_period == 3
    median = _compose(["scheduler=median"]).scheduler
    assert (median.grace_period, median.min_samples_required) == (3, 3)
    fifo = _compose(["debug=default", "scheduler=fifo"]).scheduler  # debug's grace_period: accepted
    assert fifo.name == "fifo" and fifo.grace_period == 1


def test_the_product_and_the_replay_build_the_same_default_policy():
    from benchmarks.schedulers import make_convergence
    from orchestrator.policy import ConvergenceSettings, policy_from_settings
    from orchestrator.scheduling import build_policy

    cfg = _compose([])
    product = build_policy(cfg, num_trials=cfg.num_samples)
    epochs = cfg.trainable.epochs
    direct = policy_from_settings(
        ConvergenceSettings(), mode="max", chance=0.1, budget=epochs, total_epochs=cfg.num_samples * epochs
    )
    (rule,) = product.rules
    assert product.config == direct.config and rule.rule.rungs == direct.rules[0].rule.rungs
    assert rule.guard.keep == direct.rules[0].guard.keep
    replay = make_convergence(epochs, cfg.num_samples, chance=0.1).policy
    assert replay.config == product.config and replay.rules[0].rule.rungs == rule.rule.rungs


@pytest.mark.parametrize(("dataset", "chance"), [("digits", 0.1), ("mnist1d", 0.1), ("spirals", 1 / 3)])
def test_the_policy_chance_of_a_built_in_is_one_over_the_dataset_classes(dataset, chance):
    from orchestrator.scheduling import build_policy

    policy = build_policy(_compose([f"trainable.dataset={dataset}"]), num_trials=10)
    assert policy.config.chance == pytest.approx(chance)
    declared = _compose([f"trainable.dataset={dataset}", "trainable.metrics.chance=0.5"])
    assert build_policy(declared, num_trials=10).config.chance == 0.5  # a declared chance wins


def test_convergence_settings_are_overridable_from_the_command_line():
    from orchestrator.scheduling import build_policy

    cfg = _compose(
        ["scheduler.thresholds.window=7", "scheduler.loss_guard=false", "scheduler.max_restarts=3"]
    )
    policy = build_policy(cfg, num_trials=50)
    assert policy.config.thresholds.window == 7 and policy.config.max_restarts == 3
    assert [type(r).__name__ for r in policy.rules] == ["AshaRungs"]  # no loss guard
    assert build_policy(_compose(["scheduler.inner=null"]), num_trials=50).rules == []
    costly = build_policy(_compose(["scheduler.cost_rungs=true", "scheduler.cost_calibration=6"]), 50)
    assert costly.rules[1].clock == "seconds" and costly.rules[1].rule.calibration == 6


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scheduler.restart_success=1.5", "scheduler.restart_success: must be in [0, 1]"),
        ("scheduler.collapse_margin=0", "scheduler.collapse_margin: must be > 0"),
        ("scheduler.stop_min_left=-0.1", "scheduler.stop_min_left: must be in [0, 1]"),
        ("scheduler.contender_margin=-1", "scheduler.contender_margin: must be >= 0"),
        ("scheduler.restart_trust=-1", "scheduler.restart_trust: must be >= 0"),
        ("scheduler.cost_calibration=0", "scheduler.cost_calibration: must be a whole number >= 1"),
        ("scheduler.inner=hyperband", "scheduler.inner: must be one of asha"),
        ("+scheduler.thresholds.windw=3", "scheduler.thresholds.windw: unknown threshold (known: "),
        ("scheduler.thresholds.window=1", "scheduler.thresholds.window: must be int in [2, inf), got 1"),
    ],
)
def test_bad_convergence_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _compose([override])


@pytest.mark.parametrize("name", ["my sweep 2", "lr-study_v1.2", "étude", "a" * 100])
def test_a_sweep_name_is_any_printable_path_component(name):
    assert _compose([f"name='{name}'"]).name == name  # quoted: Hydra's grammar reads non-ASCII so
