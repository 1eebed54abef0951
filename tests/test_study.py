"""The sweep's lasting Optuna study, continuing an earlier sweep, configurations tried first.

Real Optuna storage (SQLite files and journal files in a tmp dir), the real searcher; no Ray
cluster (the sweeps themselves run in tests/test_continue.py).
"""

import json
import re

import optuna
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from optuna.trial import TrialState

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.history import StudyPlan, find_study, plan
from orchestrator.search import build_searcher
from orchestrator.study import create_sweep_study, dashboard_command, open_storage, resolve_url, shown

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Only the optimizer is searched (three values): proposals repeat soon.
ONE_CHOICE = [f"trainable.hparams.{k}={v}" for k, v in {
    "lr": 0.01, "batch_size": 32, "hidden_layers": 1, "width": 32, "activation": "relu",
    "batch_norm": "false", "dropout": 0.0, "weight_decay": 0.0,
}.items()]  # fmt: skip


def _config(overrides=()):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=default", *overrides])
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def _url(tmp_path, name="optuna.db"):
    return f"sqlite:///{tmp_path / name}"


def _finish(searcher, tid, value):
    params = searcher.suggest(tid)
    searcher.on_trial_complete(tid, {"val_acc": value(params) if callable(value) else value})
    return params


# -- where the study is kept ---------------------------------------------------------------------


def test_the_store_is_beside_a_sqlite_mlflow_store_else_in_the_launch_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    launch = str(tmp_path)
    assert resolve_url(_config(), launch) == f"sqlite:///{tmp_path}/optuna.db"
    db = _config(["tracking.uri=sqlite:////data/x/mlflow.db"])
    assert resolve_url(db, launch) == "sqlite:////data/x/optuna.db"
    assert (
        resolve_url(_config(["tracking.uri=http://127.0.0.1:5000"]), launch)
        == f"sqlite:///{launch}/optuna.db"
    )
    assert resolve_url(_config(["tracking.enabled=false"]), launch) == f"sqlite:///{launch}/optuna.db"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("sqlite:///studies/o.db", "sqlite:///{t}/studies/o.db"),
        ("sqlite:////abs/o.db", "sqlite:////abs/o.db"),
        ("journal:studies/o.log", "journal:{t}/studies/o.log"),
        ("studies/o.log", "journal:{t}/studies/o.log"),
        ("journal:/abs/o", "journal:/abs/o"),
        ("postgresql://me:pw@db.example.org/optuna", "postgresql://me:pw@db.example.org/optuna"),
    ],
)
def test_a_given_store_is_made_absolute_against_the_launch_dir(tmp_path, value, expected):
    assert resolve_url(_config([f"search.storage={value}"]), str(tmp_path)) == expected.format(t=tmp_path)


def test_a_password_is_never_shown():
    url = "postgresql://me:hunter2@db.example.org:5432/optuna"
    assert shown(url) == "postgresql://me:***@db.example.org:5432/optuna"
    assert dashboard_command(url) == "optuna-dashboard postgresql://me:***@db.example.org:5432/optuna"
    assert dashboard_command("journal:/s/o.log") == "optuna-dashboard /s/o.log"
    assert StudyPlan(url).tags("s") == {"optuna_study": "s", "optuna_storage": shown(url)}


# -- the searcher over a stored study ------------------------------------------------------------


def test_the_searcher_writes_its_trials_and_their_outcomes_into_the_store(tmp_path):
    cfg = _config()
    storage = open_storage(_url(tmp_path))
    create_sweep_study(storage, "debug_1", cfg, {"mlflow_parent_run_id": "abc"})
    searcher = build_searcher(cfg, storage, "debug_1")
    for i in range(4):
        searcher.suggest(f"t{i}")
    searcher.on_trial_result("t0", {"val_acc": 0.5, "training_iteration": 1})
    searcher.record_outcome(
        "t0", "COMPLETE", 0.6, {"verdict": "converged", "reason": "plateau", "attempt": 1}
    )
    searcher.note_restart("t0", 1, "stuck: no progress")
    searcher.on_trial_complete("t0", {"val_acc": 0.6})
    searcher.record_outcome("t1", "PRUNED", None, {"verdict": "progressing", "reason": "rank rule"})
    searcher.on_trial_complete("t1", {"val_acc": 0.2})
    searcher.on_trial_complete("t2", None, error=True)

    study = optuna.load_study(study_name="debug_1", storage=_url(tmp_path))  # read back from the file
    t0, t1, t2, t3 = study.trials
    assert study.user_attrs["mlflow_parent_run_id"] == "abc" and study.user_attrs["sweep"] == "debug"
    assert (t0.state, t0.value, t0.intermediate_values) == (TrialState.COMPLETE, 0.6, {1: 0.5})
    assert t0.user_attrs["attempts"] == 2 and t0.user_attrs["restart_reasons"] == ["stuck: no progress"]
    assert t0.user_attrs["verdict"] == "converged" and t0.user_attrs["ray_trial_id"] == "t0"
    assert t1.state == TrialState.PRUNED and t1.user_attrs["attempts"] == 1
    assert t2.state == TrialState.FAIL
    assert t3.state == TrialState.RUNNING


def test_a_proposal_equal_to_a_finished_trial_is_told_as_it_and_not_run(tmp_path):
    cfg = _config([*ONE_CHOICE, "search=random"])
    storage = open_storage(_url(tmp_path))
    create_sweep_study(storage, "s", cfg, {})
    searcher = build_searcher(cfg, storage, "s")
    value = {"adam": 0.9, "rmsprop": 0.8, "sgd_momentum": 0.1}
    run = [_finish(searcher, f"t{i}", lambda p: value[p["optimizer"]])["optimizer"] for i in range(3)]
    assert sorted(run) == sorted(value), "three trials ran the three configurations, once each"
    study = optuna.load_study(study_name="s", storage=_url(tmp_path))
    skipped = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert skipped, "the seeded random sampler proposed a repeat (else the test proves nothing)"
    for t in skipped:
        earlier = study.trials[t.user_attrs["duplicate_of"]]
        assert t.params == earlier.params and (t.state, t.value) == (earlier.state, earlier.value)
        assert "ray_trial_id" not in t.user_attrs
    # a fourth trial: the space is used up, so after the retries the last proposal runs anyway
    fourth = searcher.suggest("t3")
    assert fourth["optimizer"] in value


def test_an_enqueued_configuration_runs_even_when_it_was_run_before(tmp_path):
    cfg = _config([*ONE_CHOICE, "search=random"])
    storage = open_storage(_url(tmp_path))
    study = create_sweep_study(storage, "s", cfg, {})
    searcher = build_searcher(cfg, storage, "s")
    first = _finish(searcher, "t0", 0.5)
    study.enqueue_trial({"optimizer": first["optimizer"]})
    assert searcher.suggest("t1")["optimizer"] == first["optimizer"]


def test_trials_a_killed_driver_asked_after_its_snapshot_are_told_fail_on_resume(tmp_path):
    """Ray restores the searcher from its last snapshot; the store knows more (asked later)."""
    cfg = _config()
    storage = open_storage(_url(tmp_path))
    create_sweep_study(storage, "s", cfg, {})
    searcher = build_searcher(cfg, storage, "s")
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.suggest("t1")  # then the driver dies

    resumed = build_searcher(cfg, open_storage(_url(tmp_path)), "s")  # as sweep.resume builds it
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("t0", {"val_acc": 0.7})
    assert resumed.suggest("t2")["trial_index"] == 2  # no number reused
    study = optuna.load_study(study_name="s", storage=_url(tmp_path))
    states = [(t.number, t.state) for t in study.trials]
    assert states == [(0, TrialState.COMPLETE), (1, TrialState.FAIL), (2, TrialState.RUNNING)]
    assert "lost" in study.trials[1].user_attrs
    assert len(optuna.get_all_study_names(_url(tmp_path))) == 1


def test_a_journal_file_holds_the_study_too(tmp_path):
    cfg = _config(["search.storage=studies/sweeps.log"])
    url = resolve_url(cfg, str(tmp_path))
    storage = open_storage(url)
    create_sweep_study(storage, "s", cfg, {})
    _finish(build_searcher(cfg, storage, "s"), "t0", 0.5)
    reread = optuna.load_study(study_name="s", storage=open_storage(url))
    assert [t.state for t in reread.trials] == [TrialState.COMPLETE]


# -- continuing an earlier sweep ------------------------------------------------------------------


def _start(found: StudyPlan, name: str, cfg) -> tuple:
    """The steps of a sweep's start (orchestrator/sweep.py): the store opened, the study made."""
    found.open()
    found.start(name, cfg)
    found.note_run(name, f"run-of-{name}")
    return found.storage, found.copied


def _earlier_sweep(tmp_path, name, cfg, trials=30, value=lambda p: 1.0 - abs(p["lr"] - 0.01) * 30):
    storage = open_storage(_url(tmp_path))
    create_sweep_study(storage, name, cfg, {"mlflow_parent_run_id": f"run-of-{name}"})
    searcher = build_searcher(cfg, storage, name)
    for i in range(trials):
        _finish(searcher, f"{name}-{i}", value)
    return searcher


def test_a_continued_sweep_starts_from_the_earlier_trials_and_tpe_learns_from_them(tmp_path):
    cfg = _config(["search.n_startup_trials=5"])
    first = _earlier_sweep(tmp_path, "debug_20260101-000000", cfg)
    cont = _config(["search.n_startup_trials=5", "search.continue_from=debug"])
    found = plan(cont, _url(tmp_path), str(tmp_path))
    assert found.source.name == "debug_20260101-000000"
    assert found.tags("debug_20260102-000000") == {
        "optuna_study": "debug_20260102-000000",
        "optuna_storage": _url(tmp_path),
        "continued_from": "debug_20260101-000000",
        "continued_from_sweep": "debug",
        "continued_from_run": "run-of-debug_20260101-000000",
    }
    storage, copied = _start(found, "debug_20260102-000000", cont)
    assert copied == 30
    searcher = build_searcher(cont, storage, "debug_20260102-000000", history=copied)
    later = [searcher.suggest(f"n{i}")["lr"] for i in range(5)]
    early = [t.params["lr"] for t in first._ot_study.trials[:5]]  # the earlier sweep's random start
    assert sum(abs(lr - 0.01) for lr in later) < sum(abs(lr - 0.01) for lr in early)
    study = optuna.load_study(study_name="debug_20260102-000000", storage=_url(tmp_path))
    assert [t.number for t in study.trials[:30]] == list(range(30))
    assert study.trials[3].user_attrs["copied_from"] == "debug_20260101-000000#3"
    assert study.user_attrs["continued_from"] == "debug_20260101-000000"
    assert study.user_attrs["mlflow_parent_run_id"] == "run-of-debug_20260102-000000"
    assert [t.params["lr"] for t in study.trials[30:]] == later


def test_a_sweep_name_means_its_latest_study_and_a_directory_its_own(tmp_path):
    for name in ("debug_20260101-000000", "debug_20260103-000000", "other_20260104-000000"):
        _earlier_sweep(tmp_path, name, _config([f"name={name.split('_')[0]}"]), trials=1, value=0.5)
    url, stores = _url(tmp_path), {}
    assert find_study("debug", "k", url, str(tmp_path), stores).name == "debug_20260103-000000"
    assert (
        find_study("debug_20260101-000000", "k", url, str(tmp_path), stores).name == "debug_20260101-000000"
    )
    sweep_dir = tmp_path / "results" / "debug_20260101-000000"
    sweep_dir.mkdir(parents=True)
    record = {"experiment": sweep_dir.name, "study_storage": url, "parent_run_id": "p"}
    (sweep_dir / "orchestrator.json").write_text(json.dumps(record))
    found = find_study("results/debug_20260101-000000", "k", url, str(tmp_path), stores)
    assert (found.name, found.parent_run_id) == ("debug_20260101-000000", "run-of-debug_20260101-000000")
    with pytest.raises(
        ConfigError, match=r"^k: no study or sweep named 'nope' in sqlite:///.* \(studies there"
    ):
        find_study("nope", "k", url, str(tmp_path), stores)


def test_earlier_trials_outside_this_space_are_left_out(tmp_path):
    _earlier_sweep(tmp_path, "debug_20260101-000000", _config(), trials=6, value=0.5)
    narrow = ["trainable.hparams.lr={type:loguniform,low:0.001,high:0.002}", "search.continue_from=debug"]
    cont = _config(narrow)
    storage, copied = _start(plan(cont, _url(tmp_path), str(tmp_path)), "d2", cont)
    study = optuna.load_study(study_name="d2", storage=storage)
    assert copied == len(study.trials) < 6
    assert all(0.001 <= t.params["lr"] <= 0.002 for t in study.trials)


def test_enqueued_configurations_and_the_best_of_a_sweep_come_first(tmp_path):
    _earlier_sweep(tmp_path, "debug_20260101-000000", _config(), trials=6)
    cfg = _config(["search.enqueue=[{lr:0.02,optimizer:adam},{best_of:debug,count:2}]"])
    storage, copied = _start(plan(cfg, _url(tmp_path), str(tmp_path)), "d2", cfg)
    assert copied == 0
    earlier = optuna.load_study(study_name="debug_20260101-000000", storage=storage)
    best = sorted(earlier.trials, key=lambda t: -t.value)[:2]
    searcher = build_searcher(cfg, storage, "d2")
    got = [searcher.suggest(f"t{i}") for i in range(4)]
    assert (got[0]["lr"], got[0]["optimizer"]) == (0.02, "adam")
    assert [{k: g[k] for k in best[0].params} for g in got[1:3]] == [t.params for t in best]
    study = optuna.load_study(study_name="d2", storage=storage)
    assert study.trials[0].user_attrs["enqueued"] == "search.enqueue[0]"
    assert study.trials[1].user_attrs["enqueued"] == f"best of debug_20260101-000000 (trial {best[0].number})"
    assert "enqueued" not in study.trials[3].user_attrs


TWO = "+objectives=[{metric: val_acc, mode: max}, {metric: params, mode: min}]"


def test_a_study_is_continued_or_picked_from_only_by_a_sweep_of_the_same_objectives(tmp_path):
    create_sweep_study(open_storage(_url(tmp_path)), "debug_20260101-000000", _config([TWO]), {})
    other = "+objectives=[{metric: val_acc, mode: max}, {metric: val_loss, mode: min}]"
    for overrides, theirs, ours in (
        ([], "val_acc max, params min", "one (val_acc max)"),
        ([other], "val_acc max, params min", "val_acc max, val_loss min"),
    ):
        for override, key in (
            ("search.continue_from=debug", "search.continue_from"),
            ("search.enqueue=[{best_of:debug}]", r"search.enqueue\[0\].best_of"),
        ):
            said = f"'debug_20260101-000000' optimised {theirs}, this sweep {ours}"
            message = rf"^{key}: {re.escape(said)}$"
            with pytest.raises(ConfigError, match=message):
                plan(_config([*overrides, override]), _url(tmp_path), str(tmp_path))
    create_sweep_study(open_storage(_url(tmp_path)), "single_20260101-000000", _config(), {})
    with pytest.raises(ConfigError, match=r"optimised one objective \(val_acc max\), this sweep val_acc max"):
        plan(_config([TWO, "search.continue_from=single"]), _url(tmp_path), str(tmp_path))


def test_a_study_of_two_objectives_is_continued_with_both_values_and_its_front_enqueued(tmp_path):
    two = _config([TWO])
    storage = open_storage(_url(tmp_path))
    create_sweep_study(storage, "debug_20260101-000000", two, {})
    searcher = build_searcher(two, storage, "debug_20260101-000000")
    for i in range(8):
        params = searcher.suggest(f"e{i}")
        size = params["width"] * params["hidden_layers"]
        searcher.on_trial_complete(f"e{i}", {"val_acc": 1.0 - abs(params["lr"] - 0.01) * 30, "params": size})
    earlier = optuna.load_study(study_name="debug_20260101-000000", storage=storage)
    front = sorted(earlier.best_trials, key=lambda t: -t.values[0])
    cont = _config([TWO, "search.continue_from=debug", "search.enqueue=[{best_of:debug,count:2}]"])
    storage, copied = _start(plan(cont, _url(tmp_path), str(tmp_path)), "d2", cont)
    study = optuna.load_study(study_name="d2", storage=storage)
    assert copied == 8 and len(study.directions) == 2
    assert sorted(t.values for t in study.trials[:8]) == sorted(t.values for t in earlier.trials)
    got = [build_searcher(cont, storage, "d2").suggest(f"t{i}") for i in range(1)]
    assert {k: got[0][k] for k in front[0].params} == front[0].params
    enqueued = [t.user_attrs.get("enqueued") for t in study.trials[8:]]
    assert enqueued == [f"best of debug_20260101-000000 (trial {t.number})" for t in front[:2]]
