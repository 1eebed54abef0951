"""A user's own model: a train function ``fn(hp, trial)`` in a package outside the repository,
tuned through the command line with real Ray, real MLflow and real training.

The package (written by :func:`_package` into a temp directory, the launch directory) is a
small ReLU regressor on scikit-learn's bundled diabetes data reporting ``val_loss`` (MSE) and
``val_mae`` in the targets' units (tens to thousands: no [0, 1] scale, no chance level).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import cli, run_cli
from mlflow.tracking import MlflowClient

TRAIN = """
import torch
from sklearn.datasets import load_diabetes
from torch import nn

def make_model(hp):
    return nn.Sequential(nn.Linear(10, int(hp["width"])), nn.ReLU(), nn.Linear(int(hp["width"]), 1))

def _data():
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    return x[:330], y[:330], x[330:], y[330:]

def train(hp, trial):
    x_tr, y_tr, x_va, y_va = _data()
    model = make_model(hp)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    trial.watch(model, opt)
    start = trial.restore(model=model, optimizer=opt)
    if hp.get("poison_first") and trial.attempt == 0:
        with torch.no_grad():
            model[0].bias.fill_(-1.0e4)  # a dead start: every ReLU unit off for every input
    for epoch in range(start + 1, trial.epochs + 1):
        model.train()
        for idx in torch.randperm(len(x_tr)).split(32):
            opt.zero_grad()
            nn.functional.mse_loss(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(x_va)
        trial.report(
            epoch,
            val_loss=nn.functional.mse_loss(pred, y_va),
            val_mae=(pred - y_va).abs().mean(),
            val_r2=1 - ((pred - y_va) ** 2).sum() / ((y_va - y_va.mean()) ** 2).sum(),
            checkpoint={"model": model, "optimizer": opt},
        )
"""


def _package(root: Path) -> Path:
    """The user's launch directory holding the package ``mypkg`` (outside the repository)."""
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "train.py").write_text(textwrap.dedent(TRAIN))
    return root


def _sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "trainable=function",
        "trainable.fn=mypkg.train:train",
        "+trainable.hparams.lr={type:loguniform,low:3e-3,high:3e-1}",
        "+trainable.hparams.width=32",
        "metric=val_mae",
        "mode=min",
        "verbose=0",
        "report=false",
        f"storage.path={tmp_path / 'results'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]


def _runs(tmp_path: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_a_users_function_is_tuned_on_its_own_metric(tmp_path):
    """metric=val_mae mode=min: every trial's run holds its own metrics per epoch (val_mae,
    val_r2, and the watched grad_norm, dead_frac, lr); the summary's best value is MLflow's; the
    best checkpoint is logged as a model built by trainable.model_fn."""
    work = _package(tmp_path / "user")
    out = run_cli(
        work,
        *_sweep_args(
            tmp_path, "num_samples=3", "trainable.epochs=6", "trainable.model_fn=mypkg.train:make_model"
        ),
    )
    assert "best val_mae (min):" in out, out
    best = float(out.split("best val_mae (min):")[1].split()[0])
    client, runs = _runs(tmp_path)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3
    finals = []
    for run in children:
        history = client.get_metric_history(run.info.run_id, "val_mae")
        steps = [m.step for m in history]
        assert steps == list(range(1, len(steps) + 1)), steps
        for key in ("val_r2", "val_loss", "grad_norm", "dead_frac", "lr", "time_this_iter_s"):
            assert len(client.get_metric_history(run.info.run_id, key)) == len(steps), key
        finals.append(history[-1].value)
    assert best == pytest.approx(min(finals), rel=1e-4)
    assert "best model: models:/" in out, out
    best_run = out.split("best trial run ")[1].split(")")[0]
    assert [a.path for a in client.list_artifacts(best_run, "checkpoint")] == ["checkpoint/checkpoint.pt"]
    assert "rules:" in out and "collapse (no chance level)" in out, out


@pytest.mark.slow
def test_a_dead_first_seed_is_restarted_with_a_new_seed_and_finishes(tmp_path):
    """The function kills every ReLU unit on its first attempt: the trial is restarted from
    scratch with a new seed (the function is called again) and the second attempt finishes."""
    work = _package(tmp_path / "user")
    args = _sweep_args(
        tmp_path, "num_samples=1", "trainable.epochs=8", "+trainable.hparams.poison_first=true"
    )
    out = run_cli(work, *args, "scheduler.restart_budget=1.0")
    assert "1 restarts" in out, out
    client, runs = _runs(tmp_path)
    attempts = sorted(
        (r for r in runs if "mlflow.parentRunId" in r.data.tags and r.data.tags.get("restart_reason")),
        key=lambda r: r.info.start_time,
    )
    assert attempts and "dead" in attempts[0].data.tags["restart_reason"], [r.data.tags for r in runs]
    seeds = {r.data.metrics["seed"] for r in runs if "seed" in r.data.metrics}
    assert len(seeds) == 2  # the restart ran with another seed
    (trial_run,) = [r for r in runs if r.data.tags.get("lineage")]
    lineage = json.loads(trial_run.data.tags["lineage"])
    assert {a["seed"] for a in lineage} == {int(s) for s in seeds}  # the first attempt's too
    assert "trials by final status: COMPLETED 1" in out or "CONVERGED 1" in out, out
    best = float(out.split("best val_mae (min):")[1].split()[0])
    assert trial_run.data.metrics["final_val_mae"] == pytest.approx(best, rel=1e-6)  # the last attempt's


@pytest.mark.slow
def test_a_missing_objective_is_one_line_naming_what_was_reported(tmp_path):
    """Two trials at once, Ray's status table on (verbose=1: it sorts trials by the objective,
    which the broken ones lack)."""
    work = _package(tmp_path / "user")
    args = _sweep_args(tmp_path, "num_samples=3", "trainable.epochs=3", "metric=val_rmse")
    proc = cli(work, *[a if a != "verbose=0" else "verbose=1" for a in args])
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: val_rmse: the trial did not report it (reported: "), last
    assert "val_mae" in last and "val_r2" in last
    # the driver prints no traceback (a stopped trial's worker, "(train pid=N)", may print its
    # interpreter's shutdown noise under load)
    driver = [line for line in proc.stderr.splitlines() if "pid=" not in line]
    assert not any("Traceback" in line for line in driver), proc.stderr[-3000:]


def test_check_runs_one_trial_here_and_prints_its_keys(tmp_path):
    work = _package(tmp_path / "user")
    proc = cli(work, *_sweep_args(tmp_path, "check=true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "reported keys: attempt, dead_frac, epoch, grad_norm, lr, seed, val_loss, val_mae, val_r2" in out
    assert "objective val_mae (min):" in out and "ok: the results fit the metric contract" in out
    assert "off: collapse (no chance level)" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()
    broken = cli(work, *_sweep_args(tmp_path, "check=true", "metric=val_rmse"))
    assert broken.returncode == 2
    assert "problem: val_rmse: the trial did not report it" in broken.stdout


@pytest.mark.slow
def test_a_sweep_whose_every_trial_raises_exits_1_with_one_line(tmp_path):
    work = _package(tmp_path / "user")
    (work / "mypkg" / "broken.py").write_text("def train(hp, trial):\n    raise KeyError('lr')\n")
    args = _sweep_args(tmp_path, "num_samples=2", "trainable.epochs=2", "failure.max_failures=0")
    proc = cli(work, *[a.replace("mypkg.train:train", "mypkg.broken:train") for a in args])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "trials by final status: ERROR 2" in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: every trial failed (ERROR); their error files are in {_results_dir(tmp_path)}"


def _results_dir(tmp_path: Path) -> str:
    (directory,) = (tmp_path / "results").iterdir()
    return str(directory)
