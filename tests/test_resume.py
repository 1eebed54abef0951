"""Resuming a sweep whose driver died: ``python -m orchestrator resume=<sweep dir>``.

The slow test kills a real sweep's driver with SIGKILL mid-sweep and resumes it; the fast
ones give ``resume`` bad sweep directories.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, cli_env, run_cli
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from analysis.load import read_results
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.preemption import latest_unfinished
from orchestrator.resume import RECORD_FILE, SweepRecord, config_data, read_record, write_record


def _rows(trial_dir):
    return read_results(os.path.join(trial_dir, "result.json"))


def _snapshot_has(sweep_dir, trial_ids):
    """True when Ray's newest experiment snapshot knows every trial in ``trial_ids``."""
    states = sorted(glob.glob(os.path.join(sweep_dir, "experiment_state-*.json")))
    if not states:
        return False
    try:
        with open(states[-1]) as f:
            text = f.read()
    except OSError:
        return False
    return all(tid in text for tid in trial_ids)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's session: Ray processes it orphaned too
    except ProcessLookupError:
        pass


def check_mlflow_record(db, sweep_dir, num_trials):
    """Every trial of the sweep has one MLflow run whose steps are each epoch once; nothing RUNNING.

    Returns the Ray trial dirs' rows by trial id.
    """
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.info.status != "RUNNING" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    # a trial the killed driver started after Ray's last snapshot is not part of the resumed
    # sweep: its run, if it had one, is tagged LOST (and its directory may hold results)
    lost = {r.data.tags["trial_id"] for r in runs if r.data.tags.get("final_status") == "LOST"}
    by_trial = {}
    for trial_dir in glob.glob(os.path.join(sweep_dir, "trial_*")):
        rows = _rows(trial_dir)
        if rows and rows[0]["trial_id"] not in lost:
            by_trial[rows[0]["trial_id"]] = rows
    assert len(by_trial) == num_trials, sorted(by_trial)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_runs = {
        r.data.tags["trial_id"]: r
        for r in runs
        if r.data.tags.get("attempt") is None and r.data.tags.get("trial_id", "") not in lost | {""}
    }
    assert set(trial_runs) == set(by_trial)
    for tid, rows in by_trial.items():
        run = trial_runs[tid]
        assert run.info.status in ("FINISHED", "FAILED")
        last_attempt = max(int(r["attempt"]) for r in rows)
        if last_attempt == 0:
            epochs = sorted({int(r["epoch"]) for r in rows})
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
            assert steps == epochs == list(range(1, epochs[-1] + 1)), (tid, steps, epochs)
    return by_trial


def check_study(db, sweep_dir, by_trial) -> None:
    """The resumed sweep kept its one Optuna study (named as its directory): one finished Optuna
    trial per Ray trial with its final value, none left RUNNING, nothing else but trials lost
    with the killed driver (asked after its last snapshot: FAIL, ``lost``)."""
    import optuna
    from optuna.trial import TrialState

    name = os.path.basename(sweep_dir)
    assert optuna.get_all_study_names(f"sqlite:///{db}") == [name]
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials
    ran = {t.user_attrs["ray_trial_id"]: t for t in trials if "lost" not in t.user_attrs}
    assert set(ran) == set(by_trial), (sorted(ran), sorted(by_trial))
    assert all(t.state == TrialState.FAIL for t in trials if "lost" in t.user_attrs)
    for tid, trial in ran.items():
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), (tid, trial.state)
        assert trial.number == by_trial[tid][0]["config"]["trial_index"]


def _sweep_args(results, epochs: int = 6) -> list[str]:
    return [
        "debug=default",
        "num_samples=3",
        f"trainable.epochs={epochs}",
        "trainable.checkpoint_every=1",
        "cluster.num_cpus=1",
        "report=false",
        "tracking.log_model=false",
        "verbose=0",
        f"storage.path={results}",
    ]


def _start_until_mid_sweep(tmp_path, results, epochs: int = 6, **popen) -> subprocess.Popen:
    """Start the sweep of :func:`_sweep_args`; return once one trial is done, the next one
    training, and Ray's snapshot knows both."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *_sweep_args(results, epochs)],
        cwd=tmp_path,
        env=cli_env(),
        start_new_session=True,
        **({"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} | popen),
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        sweeps = glob.glob(str(results / "*"))
        trials = {
            rows[0]["trial_id"]: len(rows)
            for rows in map(_rows, glob.glob(str(results / "*" / "trial_*")))
            if rows
        }
        if len(trials) >= 2 and sum(trials.values()) >= 8 and _snapshot_has(sweeps[0], trials):
            return proc
        time.sleep(0.2)
    _kill_group(proc)
    raise AssertionError("the sweep ended before it could be stopped mid-way")


@pytest.mark.slow
def test_a_sweep_whose_driver_was_killed_is_finished_by_resume(tmp_path):
    results = tmp_path / "results"
    proc = _start_until_mid_sweep(tmp_path, results)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_group(proc)
        proc.wait(timeout=30)
    (sweep_dir,) = glob.glob(str(results / "*"))
    before = {rows[0]["trial_id"]: rows for rows in map(_rows, glob.glob(f"{sweep_dir}/trial_*")) if rows}

    out = run_cli(tmp_path, f"resume={sweep_dir}")
    assert f"Ray results: {sweep_dir}" in out and "trials by final status:" in out

    by_trial = check_mlflow_record(tmp_path / "mlflow.db", sweep_dir, 3)
    assert set(before) <= set(by_trial)
    for tid, rows in by_trial.items():
        fresh_starts = [r for r in rows if r["epoch"] == 1 and r["attempt"] == 0 and not r.get("replayed")]
        assert len(fresh_starts) == 1, f"trial {tid} trained from scratch twice"
    # the searcher continued: the three trials are Optuna's trials 0, 1 and 2, no number reused
    # (3 instead of 2 when the killed driver had asked for trial 2 after its last snapshot: the
    # study keeps that one as lost, see check_study)
    indexes = sorted(rows[0]["config"]["trial_index"] for rows in by_trial.values())
    assert indexes in ([0, 1, 2], [0, 1, 3]), indexes
    check_study(tmp_path / "optuna.db", sweep_dir, by_trial)
    # the scheduler continued: its lineage counts the epochs trained before the kill as well
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs(["1"]) if "mlflow.parentRunId" not in r.data.tags]
    trained = sum(
        max(int(r["epoch"]) for r in rows if r["attempt"] == a)
        for rows in by_trial.values()
        for a in {r["attempt"] for r in rows}
    )
    assert parent.data.metrics["epochs_run"] == trained
    assert parent.data.metrics["trials"] == 3


@pytest.mark.slow
def test_a_preempted_sweep_exits_resumable_and_resume_auto_finishes_it(tmp_path):
    """SIGTERM (SLURM's or Kubernetes' preemption) mid-sweep: the driver saves the sweep, ends
    its MLflow runs and exits 75 within 30 s; the same command with resume=auto finds the
    sweep and finishes it, nothing lost or trained twice; a finished sweep is not resumed."""
    results = tmp_path / "results"
    # 12 epochs: a tail long enough that a loaded machine cannot end the sweep before the SIGTERM
    proc = _start_until_mid_sweep(tmp_path, results, 12, stderr=subprocess.PIPE, text=True)
    try:
        sent = time.time()
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.time() - sent
    finally:
        _kill_group(proc)
    assert proc.returncode == 75, err[-3000:]
    assert took < 30, took
    assert err.strip().splitlines()[-1].startswith("error: preempted (SIGTERM): the sweep was saved"), err[
        -2000:
    ]
    (sweep_dir,) = glob.glob(str(results / "*"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(["1"])
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    assert not json.loads((Path(sweep_dir) / RECORD_FILE).read_text())["finished"]

    out = run_cli(tmp_path, *_sweep_args(results, 12), "resume=auto")
    assert f"resume=auto: resuming {sweep_dir}" in out and f"Ray results: {sweep_dir}" in out, out
    by_trial = check_mlflow_record(tmp_path / "mlflow.db", sweep_dir, 3)
    for tid, rows in by_trial.items():
        fresh_starts = [r for r in rows if r["epoch"] == 1 and r["attempt"] == 0 and not r.get("replayed")]
        assert len(fresh_starts) == 1, f"trial {tid} trained from scratch twice"
    assert json.loads((Path(sweep_dir) / RECORD_FILE).read_text())["finished"]
    assert latest_unfinished(str(results), "debug", RECORD_FILE) is None
    check_study(tmp_path / "optuna.db", sweep_dir, by_trial)


# -- bad resume inputs: one line naming `resume`, exit 2, nothing started -------------------------


def _sweep_dir(tmp_path, name="debug_20260101-000000"):
    """A sweep directory as a sweep leaves it before its first trial result."""
    with initialize_config_module(config_module="conf", version_base="1.3"):
        composed = compose(config_name="config", overrides=["debug=default"])
    cfg = load_config(OmegaConf.to_container(composed, resolve=True))
    record = SweepRecord(
        name, str(tmp_path), str(tmp_path), config_data(cfg), ["debug=default"], "", None, None
    )
    write_record(record)
    directory = tmp_path / name
    (directory / "tuner.pkl").write_bytes(b"\x80\x04N.")
    (directory / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    return directory


def _refused(path):
    with pytest.raises(ConfigError) as info:
        read_record(str(path))
    message = str(info.value)
    assert message.startswith("resume: ") and "\n" not in message
    return message


def test_resume_refuses_a_path_that_does_not_exist(tmp_path):
    assert "is not a directory" in _refused(tmp_path / "nowhere")


def test_resume_refuses_a_directory_that_is_not_a_sweep(tmp_path):
    assert "is not a sweep directory" in _refused(tmp_path)


def test_resume_refuses_a_corrupt_record(tmp_path):
    directory = _sweep_dir(tmp_path)
    (directory / RECORD_FILE).write_text('{"experiment": "debug_2026')
    assert f"{RECORD_FILE} is corrupt" in _refused(directory)


def test_resume_refuses_a_record_of_another_version(tmp_path):
    directory = _sweep_dir(tmp_path)
    data = json.loads((directory / RECORD_FILE).read_text())
    (directory / RECORD_FILE).write_text(json.dumps({**data, "version": 99}))
    assert "version 99" in _refused(directory)


@pytest.mark.parametrize("version", [1, 2])
def test_resume_refuses_a_sweep_of_an_earlier_release(tmp_path, version):
    """Records of earlier versions come with a tuner.pkl that names modules which moved
    (orchestrator.rungs, trainables.entry): one line that says which release can resume it."""
    directory = _sweep_dir(tmp_path)
    data = json.loads((directory / RECORD_FILE).read_text())
    (directory / RECORD_FILE).write_text(json.dumps({**data, "version": version}))
    message = _refused(directory)
    assert "earlier release" in message and f"version {version}" in message


def test_resume_refuses_a_record_copied_from_another_sweep(tmp_path):
    directory = _sweep_dir(tmp_path)
    other = tmp_path / "debug_20260202-000000"
    os.rename(directory, other)
    assert "belongs to sweep 'debug_20260101-000000'" in _refused(other)


def test_resume_refuses_a_record_with_an_invalid_config(tmp_path):
    directory = _sweep_dir(tmp_path)
    data = json.loads((directory / RECORD_FILE).read_text())
    data["config"]["num_samples"] = 0
    (directory / RECORD_FILE).write_text(json.dumps(data))
    assert "invalid config (num_samples: must be >= 1" in _refused(directory)


def test_resume_refuses_a_sweep_without_ray_state(tmp_path):
    directory = _sweep_dir(tmp_path)
    for name in glob.glob(str(directory / "experiment_state-*.json")):
        os.unlink(name)
    assert "no Ray experiment state" in _refused(directory)


def test_resume_refuses_a_corrupt_ray_experiment_state(tmp_path):
    directory = _sweep_dir(tmp_path)
    (directory / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [[')
    assert "experiment state" in _refused(directory) and "is corrupt" in _refused(directory)


def test_resume_refuses_a_corrupt_checkpoint(tmp_path):
    directory = _sweep_dir(tmp_path)
    checkpoint = directory / "trial_0000_abc" / "checkpoint_000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint.pt").write_bytes(b"not a torch archive")
    assert "checkpoint_000002/checkpoint.pt is corrupt" in _refused(directory)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["resume=/no/such/sweep"], "error: resume: '/no/such/sweep' is not a directory"),
        (["resume=."], "is not a sweep directory"),
        (["resume=/tmp", "num_samples=3"], "error: resume: give the sweep directory alone"),
    ],
)
def test_the_command_line_refuses_bad_resume_input_with_one_line_and_exit_2(tmp_path, args, expected):
    proc = cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]
    assert os.listdir(tmp_path) == []  # no MLflow store, no results directory


def test_the_record_is_written_and_read_through_a_storage_uri(tmp_path):
    """``storage.path`` may be a URI: the record goes through pyarrow's file systems."""
    directory = _sweep_dir(tmp_path)
    data = json.loads((directory / RECORD_FILE).read_text())
    uri = f"file://{tmp_path}/uri"
    write_record(SweepRecord(**{**data, "storage": uri}))
    assert json.loads((tmp_path / "uri" / directory.name / RECORD_FILE).read_text())["storage"] == uri
    for name in ("tuner.pkl", "experiment_state-2026-01-01_00-00-00.json"):
        (tmp_path / "uri" / directory.name / name).write_bytes((directory / name).read_bytes())
    record, cfg = read_record(f"{uri}/{directory.name}")
    assert record.storage == uri and record.directory == f"{uri}/{directory.name}" and cfg.name == "debug"


# -- the convergence scheduler's state, as the sweep saves it in Ray's snapshots -------------------


def test_the_scheduler_state_survives_a_json_round_trip_and_continues_the_same_way():
    from test_scheduler import add_trial, result, run_until_decision, setup

    searcher, controller, scheduler = setup()
    stuck = add_trial(searcher, controller, scheduler, "t0")
    run_until_decision(scheduler, controller, stuck, lambda t: (2.3026, 0.1), dead=0.95)  # restarted
    good = add_trial(searcher, controller, scheduler, "t1")
    for epoch in range(1, 5):
        scheduler.on_trial_result(controller, good, result(epoch, 1.0 / epoch, 0.5 + 0.1 * epoch))
    state = json.loads(json.dumps(scheduler.state_dict()))  # plain data, as saved

    _, _, restored = setup()
    restored.load_state_dict(state)
    assert restored.restarts == scheduler.restarts == 1
    assert restored.decisions == scheduler.decisions
    assert restored.decisions["t0"].verdict.status == "stuck"
    assert restored.policy.lineage("t0") == scheduler.policy.lineage("t0")
    nxt = result(5, 0.19, 0.95)
    assert restored.on_trial_result(controller, good, dict(nxt)) == scheduler.on_trial_result(
        controller, good, dict(nxt)
    )
    assert restored.decisions["t1"] == scheduler.decisions["t1"]


def test_the_scheduler_tells_optuna_through_tunes_concurrency_limiter():
    """Tune wraps the searcher in a ConcurrencyLimiter when max_concurrent_trials is set."""
    from optuna.trial import TrialState
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import ConcurrencyLimiter
    from test_scheduler import add_trial, run_until_decision, setup

    searcher, controller, scheduler = setup()
    controller.search_alg.searcher = ConcurrencyLimiter(searcher, max_concurrent=2)
    trial = add_trial(searcher, controller, scheduler, "t0")
    _, action = run_until_decision(scheduler, controller, trial, lambda t: (float("nan"), 0.1))
    assert action == TrialScheduler.STOP
    searcher.on_trial_complete("t0", result=None)
    (told,) = searcher._ot_study.get_trials(deepcopy=False)
    assert told.state == TrialState.FAIL


def test_an_epoch_replayed_after_a_restore_is_not_observed_twice():
    """A trial restored from an older checkpoint reports epochs the scheduler has already seen."""
    from ray.tune.schedulers import TrialScheduler
    from test_scheduler import add_trial, result, setup

    searcher, controller, scheduler = setup()
    trial = add_trial(searcher, controller, scheduler, "t0")
    for epoch in (1, 2, 3):
        scheduler.on_trial_result(controller, trial, result(epoch, 1.0 / epoch, 0.5 + 0.1 * epoch))
    seen = scheduler.policy.epochs
    assert scheduler.on_trial_result(controller, trial, result(2, 0.5, 0.7)) == TrialScheduler.CONTINUE
    assert scheduler.policy.epochs == seen and scheduler.policy.lineage("t0")[-1].epochs == 3
    scheduler.on_trial_result(controller, trial, result(4, 0.2, 0.9))
    assert scheduler.policy.epochs == seen + 1
