"""The search as a lasting thing, end to end: a debug sweep writes its Optuna study, a second
sweep continues it (its sampler sees the first one's trials) and tries enqueued configurations
first, each its own MLflow parent run linked to the earlier one; optuna-dashboard shows the
store. Real Ray, real MLflow, real Optuna storage (SQLite), real training.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import optuna
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from benchmarks.mlflow_rate import free_port

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _args(work, *more: str) -> list[str]:
    return [
        "debug=default",
        "num_samples=3",
        "report=false",
        "verbose=0",
        "tracking.log_model=false",
        f"storage.path={work / 'results'}",
        *more,
    ]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A finished debug sweep in its own directory: (directory, its stdout)."""
    work = tmp_path_factory.mktemp("lasting")
    return work, run_cli(work, *_args(work))


def _parents(work) -> dict[str, object]:
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {r.data.tags["optuna_study"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}


def test_a_sweep_keeps_its_study_and_a_continued_sweep_starts_from_it(first):
    work, out = first
    url = f"sqlite:///{work / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(url)
    assert f"Optuna study: {name} in {url}" in out and f"view it: optuna-dashboard {url}" in out
    earlier = optuna.load_study(study_name=name, storage=url)
    assert len(earlier.trials) == 3 and all(t.state in FINISHED for t in earlier.trials)
    assert _parents(work)[name].info.run_id == earlier.user_attrs["mlflow_parent_run_id"]

    more = run_cli(
        work, *_args(work, "search.continue_from=debug", "search.enqueue=[{lr:0.02,optimizer:adam}]")
    )
    (later_name,) = set(optuna.get_all_study_names(url)) - {name}
    later = optuna.load_study(study_name=later_name, storage=url)
    trials = later.trials
    assert len(trials) == 6 and all(t.state in FINISHED for t in trials)  # 3 copied, 3 run
    assert [t.user_attrs.get("copied_from") for t in trials[:3]] == [f"{name}#{i}" for i in range(3)]
    assert [(t.params, t.value, t.state) for t in trials[:3]] == [
        (t.params, t.value, t.state) for t in earlier.trials
    ]
    enqueued = trials[3]  # the first trial this sweep ran
    assert (enqueued.params["lr"], enqueued.params["optimizer"]) == (0.02, "adam")
    assert enqueued.user_attrs["enqueued"] == "search.enqueue[0]"
    assert all("copied_from" not in t.user_attrs for t in trials[3:])
    assert later.user_attrs["continued_from"] == name and later.user_attrs["copied_trials"] == 3
    assert f"Optuna study: {later_name} in {url}" in more

    parents = _parents(work)
    tags = parents[later_name].data.tags
    assert tags["continued_from"] == name and tags["continued_from_sweep"] == "debug"
    assert tags["continued_from_run"] == parents[name].info.run_id
    results = work / "results" / later_name  # the Ray trial of the enqueued configuration: index 3
    (config,) = [json.loads(p.read_text()) for p in results.glob("trial_0003_*/params.json")]
    assert (config["lr"], config["optimizer"], config["trial_index"]) == (0.02, "adam", 3)


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return json.load(answer)


def test_optuna_dashboard_serves_the_study_a_sweep_wrote(first):
    """The command the summary prints (``optuna-dashboard <store>``), on a free port: its API
    lists the sweep's study and its trials."""
    pytest.importorskip("optuna_dashboard")
    work, _ = first
    url = f"sqlite:///{work / 'optuna.db'}"
    name = optuna.get_all_study_names(url)[0]  # the first sweep's (the other test may add one)
    port = free_port()
    command = [shutil.which("optuna-dashboard") or "optuna-dashboard", url, "--host", "127.0.0.1"]
    server = subprocess.Popen([*command, "--port", str(port), "--quiet"], stderr=subprocess.PIPE)
    try:
        studies, deadline = None, time.time() + 60
        while studies is None and time.time() < deadline and server.poll() is None:
            try:
                studies = _get(port, "/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, (
            server.stderr.read().decode() if server.poll() is not None else "no answer"
        )
        (study,) = [s for s in studies if s["study_name"] == name]
        assert study["directions"] == ["maximize"] and study["user_attrs"]
        trials = _get(port, f"/api/studies/{study['study_id']}")["trials"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(trials) == 3 and {t["state"] for t in trials} <= {"Complete", "Pruned", "Fail"}


def test_a_sweep_of_two_objectives_is_continued_from_its_front(tmp_path):
    two = "objectives=[{metric: val_acc, mode: max}, {metric: params, mode: min}]"
    run_cli(tmp_path, *_args(tmp_path, "name=pair", two))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(url)
    earlier = optuna.load_study(study_name=name, storage=url)
    best = max(earlier.best_trials, key=lambda t: t.values[0])  # the front's most accurate
    out = run_cli(
        tmp_path,
        *_args(tmp_path, "name=pair", two, "num_samples=1", "search.continue_from=pair",
               "search.enqueue=[{best_of:pair,count:1}]"),
    )  # fmt: skip
    (later_name,) = set(optuna.get_all_study_names(url)) - {name}
    later = optuna.load_study(study_name=later_name, storage=url)
    assert len(later.directions) == 2 and len(later.trials) == 4  # 3 copied, 1 run
    assert [t.values for t in later.trials[:3]] == [t.values for t in earlier.trials]
    assert later.trials[3].params == best.params and "Pareto front" in out
    assert later.trials[3].user_attrs["enqueued"] == f"best of {name} (trial {best.number})"
