"""Several objectives: the config they make, the check of a user's function that never reports
one, and (slow) a real two-objective sweep whose Pareto front in the summary is the one MLflow
records (``pareto`` tags) and the one its metrics give."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import cli

from analysis.pareto import pareto_front
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.objectives import WHY_OFF, objectives_of
from orchestrator.scheduling import build_scheduler
from orchestrator.schema import SweepConfig

TWO = [{"metric": "val_acc", "mode": "max"}, {"metric": "params"}]
ARG = "objectives=[{metric: val_acc, mode: max}, {metric: params, mode: min}]"


def _config(**changes: object) -> dict:
    data = dataclasses.asdict(SweepConfig())
    data["trainable"]["hparams"] = {"width": {"type": "choice", "values": [16, 64]}}
    data.update(changes)
    return data


def test_the_first_objective_is_the_metric_and_a_missing_mode_comes_from_the_key() -> None:
    cfg = load_config(_config(objectives=TWO, search={**_config()["search"], "algorithm": "nsga2"}))
    assert (cfg.metric, cfg.mode) == ("val_acc", "max")
    assert [(o.metric, o.mode) for o in objectives_of(cfg)] == [("val_acc", "max"), ("params", "min")]
    assert load_config(dataclasses.asdict(cfg)) == cfg  # a resumed sweep validates it again


def test_several_objectives_turn_off_rank_and_predicted_worse_pruning_and_say_why() -> None:
    cfg = load_config(_config(objectives=TWO, num_samples=64))
    scheduler = build_scheduler(cfg, 64)
    assert scheduler.policy.config.prune_predicted_worse is False and not scheduler.policy.rules
    _, off = scheduler.rules()
    assert off["rank"] == WHY_OFF and off["predicted_worse"] == WHY_OFF
    one = build_scheduler(load_config(_config(num_samples=64)), 64)  # one objective: both on
    assert one.policy.rules and "predicted_worse" not in one.rules()[1]


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {"objectives": [{"metric": "val_acc"}, {"metric": "epoch_s"}]},
            "objectives[1].metric: the built-in",
        ),
        ({"objectives": [{"metric": "params"}, {"metric": "val_acc"}]}, "objectives[0].metric: the first"),
        ({"objectives": TWO, "metric": "val_loss"}, "metric: conflicts with objectives"),
        ({"objectives": "val_acc"}, "objectives: must be a list of at least 2"),
    ],
)
def test_bad_objectives_are_one_line(changes: dict, line: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(line)):
        load_config(_config(**changes))


USER = """
def train(hp, trial):
    for epoch in range(1, trial.epochs + 1):
        trial.report(epoch, val_loss=1.0 / epoch, val_mae=2.0 / epoch + hp["lr"])
"""


def test_check_says_which_objective_the_function_never_reports(tmp_path: Path) -> None:
    (tmp_path / "userfn").mkdir()
    (tmp_path / "userfn" / "__init__.py").write_text("")
    (tmp_path / "userfn" / "fit.py").write_text(USER)
    args = [
        "debug=default", "trainable=function", "trainable.fn=userfn.fit:train", "check=true",
        "+trainable.hparams.lr={type:loguniform,low:1e-4,high:1e-1}",
        "objectives=[{metric: val_mae, mode: min}, {metric: val_f1, mode: max}]",
    ]  # fmt: skip
    proc = cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "problem: objectives: the trial never reported 'val_f1' (reported: " in proc.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_two_objective_sweep_reports_the_front_mlflow_records(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    proc = cli(tmp_path, "debug=default", "search=nsga2", "num_samples=6", "verbose=0", ARG, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head = re.search(r"Pareto front \(val_acc max, params min\): (\d+) of 6 trials", proc.stdout)
    assert head is not None, proc.stdout
    shown = dict(re.findall(r"^ {4}(trial_\d{4}_\w+): (val_acc=.*)$", proc.stdout, re.M))
    assert len(shown) == int(head.group(1)) >= 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [
        r
        for r in client.search_runs(client.search_experiments()[0].experiment_id)
        if "trial_id" in r.data.tags
    ]
    assert len(runs) == 6 and {r.data.tags["pareto"] for r in runs} <= {"true", "false"}
    tagged = {r.info.run_name for r in runs if r.data.tags["pareto"] == "true"}
    points = [(r.data.metrics["val_acc"], r.data.metrics["params"]) for r in runs]
    computed = {runs[i].info.run_name for i in pareto_front(points, ("max", "min"))}
    assert set(shown) == tagged == computed
    report = next((tmp_path / "results").glob("debug_*/report"))
    assert (report / "pareto.png").stat().st_size > 0
    assert "Pareto front (val_acc max, params min)" in (report / "report.md").read_text()
