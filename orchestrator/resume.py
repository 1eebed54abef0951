"""A sweep's own record in its Ray experiment directory, and the checks made before resuming it.

At start the sweep writes ``<sweep dir>/orchestrator.json``: the resolved config, the
overrides, where results and MLflow records go and the parent run's id; with a prior
(``scheduler.prior``), the model it read also goes to ``<sweep dir>/prior.json``. ``python -m
orchestrator resume=<sweep dir>`` reads them back, so a resumed sweep runs with exactly the
config and the prior it started with (the prior's source is not read again: an MLflow
experiment may have gained runs since, the sweep's own among them, or a file may be gone).
Every problem with the directory is one ConfigError naming ``resume``.

:class:`SweepState` keeps the convergence scheduler's state and the set of finished trials in
Ray's experiment snapshots (Ray saves the searcher's state there but not the scheduler's), so
both come back consistent with the trials Ray restores.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs
from ray.tune import Callback

from analysis.load import ray_snapshot, read_results
from orchestrator.config import SweepConfig, load_config
from orchestrator.contract import CHECKPOINT_FILE, hyperparameters, logged_metrics
from orchestrator.errors import ConfigError
from orchestrator.policy.prior import PriorModel

RECORD_FILE = "orchestrator.json"
PRIOR_FILE = "prior.json"  # the prior the sweep started with (scheduler.prior), used when it resumes
RECORD_VERSION = 3  # 2: scheduler.* holds only the chosen scheduler's keys; 3: trials run train functions
#: What changed in each earlier record version, so that such a sweep cannot be resumed here.
_EARLIER = {
    1: "before its modules were split",
    2: "before trials ran train functions (its tuner.pkl names trainables.entry)",
}
_SECRET_PATHS = (("tracking", "token"),)  # never written to disk: given again through the environment


@dataclass
class SweepRecord:
    """What a sweep needs to be resumed: its config, where it writes, and its MLflow parent run."""

    experiment: str
    storage: str
    launch_dir: str
    config: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    resolved_yaml: str = ""
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    study_storage: str | None = None  # the Optuna study's store (its study is named as the directory)
    finished: bool = False  # set when the sweep ended without being interrupted
    version: int = RECORD_VERSION

    @property
    def directory(self) -> str:
        return join(self.storage, self.experiment)


def join(storage: str, name: str) -> str:
    """``storage/name`` for a directory or a URI."""
    return f"{storage.rstrip('/')}/{name}"


def _fs(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def config_data(cfg: SweepConfig) -> dict[str, Any]:
    """The config as a plain mapping that :func:`load_config` accepts, secrets left out."""
    data = dataclasses.asdict(cfg)
    for section, key in _SECRET_PATHS:
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section][key] = None
    return data


def _write(where: str, name: str, data: dict[str, Any]) -> str:
    """Write ``data`` as JSON to ``where/name`` (a directory or a URI), atomically; return its path."""
    fs, directory = _fs(where)
    fs.create_dir(directory, recursive=True)
    path, tmp = f"{directory}/{name}", f"{directory}/.{name}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps(data, indent=1).encode("utf-8"))
    fs.move(tmp, path)
    return path


def write_record(record: SweepRecord) -> str:
    """Write ``orchestrator.json`` into the sweep directory (atomically); return its path."""
    return _write(record.directory, RECORD_FILE, dataclasses.asdict(record))


def write_prior(directory: str, model: PriorModel) -> str:
    """Store the prior a sweep starts with as ``<sweep dir>/prior.json`` (a stored prior, the
    ``.json`` form ``scheduler.prior`` reads); return its path. A resumed sweep uses it
    (:func:`read_prior`), so the prior stays the same for the life of the sweep."""
    return _write(directory, PRIOR_FILE, model.to_dict())


def read_prior(directory: str) -> PriorModel | None:
    """The prior stored in the sweep directory by :func:`write_prior` (None: none stored: a
    sweep without a prior, or one started before priors were stored); one that cannot be read
    or is corrupt is a ConfigError naming ``resume`` (never the source read again instead)."""
    fs, path = _fs(join(directory, PRIOR_FILE))
    try:
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            return PriorModel.from_dict(json.loads(f.read()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"resume: {path} cannot be read ({str(exc).splitlines()[0]})") from None


def read_record(path: str) -> tuple[SweepRecord, SweepConfig]:
    """The record and validated config of the sweep in ``path`` (its "Ray results:" directory).

    Raises ConfigError naming ``resume`` when ``path`` is not a sweep directory, its record is
    corrupt or belongs to another directory, or its Ray experiment state is missing or corrupt.
    """
    path = path.rstrip("/") if "://" in path else os.path.abspath(os.path.expanduser(path))
    try:
        fs, directory = _fs(path)
        info = fs.get_file_info(directory)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"resume: cannot open {path!r} ({exc})") from None
    if info.type != pyarrow.fs.FileType.Directory:
        raise ConfigError(
            f"resume: {path!r} is not a directory (pass the 'Ray results:' directory of a sweep)"
        )
    try:
        with fs.open_input_stream(f"{directory}/{RECORD_FILE}") as f:
            raw = f.read()
    except (OSError, FileNotFoundError):
        raise ConfigError(
            f"resume: {path!r} is not a sweep directory (no {RECORD_FILE}; pass the 'Ray results:' "
            "directory a sweep printed)"
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"resume: {path}/{RECORD_FILE} is corrupt ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and data.get("version") in _EARLIER:  # its tuner.pkl names modules that moved
        version = data["version"]
        raise ConfigError(
            f"resume: {path} was started by an earlier release of the orchestrator (record version "
            f"{version}, {_EARLIER[version]}); resume it with that release"
        )
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {RECORD_VERSION}")
        record = SweepRecord(**data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"resume: {path}/{RECORD_FILE} is corrupt ({str(exc).splitlines()[0]})") from None
    if record.experiment != os.path.basename(path.rstrip("/")):
        raise ConfigError(
            f"resume: {path}/{RECORD_FILE} belongs to sweep {record.experiment!r}, not to this directory"
        )
    cfg = _config(record, path)
    record.storage = path.rsplit("/", 1)[0]  # the directory may have moved since
    _check_experiment_state(fs, directory, path)
    return record, cfg


def _config(record: SweepRecord, path: str) -> SweepConfig:
    """The record's config, validated (its files are not checked again: a resumed sweep uses the
    prior it stored, :func:`write_prior`, and its source may be gone)."""
    try:
        return load_config(record.config)
    except ConfigError as exc:
        raise ConfigError(f"resume: {path}/{RECORD_FILE} holds an invalid config ({exc})") from None


def _check_experiment_state(fs: pyarrow.fs.FileSystem, directory: str, path: str) -> None:
    """Refuse a directory without Ray's tuner and experiment state, or with corrupt ones."""
    names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(directory))]
    states = sorted(n for n in names if n.startswith("experiment_state-") and n.endswith(".json"))
    if "tuner.pkl" not in names or not states:
        raise ConfigError(
            f"resume: {path!r} has no Ray experiment state to resume (the sweep never started?)"
        )
    try:
        with fs.open_input_stream(f"{directory}/{states[-1]}") as f:
            state = json.loads(f.read())
        trials = state["trial_data"]
        if not isinstance(trials, list):
            raise ValueError("trial_data is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"resume: the Ray experiment state {path}/{states[-1]} is corrupt ({exc})"
        ) from None
    if "://" not in path:
        _check_checkpoints(directory)


def _check_checkpoints(directory: str) -> None:
    """Every trial's newest checkpoint must be a PyTorch archive (a zip) the trainable can load."""
    for trial_dir in sorted(glob.glob(os.path.join(directory, "*", ""))):
        checkpoints = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        if not checkpoints:
            continue
        newest = os.path.join(checkpoints[-1], CHECKPOINT_FILE)
        try:
            with open(newest, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ConfigError(f"resume: checkpoint {newest} cannot be read ({exc.strerror})") from None
        if magic != b"PK\x03\x04":
            raise ConfigError(f"resume: checkpoint {newest} is corrupt (not a PyTorch checkpoint)")


class SweepState(Callback):
    """Saves the convergence scheduler's state and the trials' outcomes in Ray's experiment
    snapshots (``get_state``) and puts them back when Ray restores the experiment."""

    def __init__(self, scheduler: Any, outcomes: Any) -> None:
        self.scheduler = scheduler  # a ConvergenceScheduler, or None
        self.outcomes = outcomes  # orchestrator.outcomes.Outcomes

    def get_state(self) -> dict | None:
        return {
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "outcomes": dict(self.outcomes.status),
        }

    def set_state(self, state: dict) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.outcomes.status.update(state.get("outcomes", {}))


#: ``final_status`` of a trial run that a resumed sweep does not include (:func:`mark_lost`).
LOST = "LOST"


def snapshot_trials(directory: str) -> set[str]:
    """The trials of Ray's newest experiment snapshot in the (local) sweep ``directory``: the
    trials a resumed sweep restores."""
    return {str(t["trial_id"]) for t in ray_snapshot(directory) or ()}


def mark_lost(directory: str, tracker: Any) -> set[str]:
    """End, tagged ``final_status=LOST`` and ``lost`` (why), the MLflow runs of trials that Ray's
    newest snapshot does not know: the killed driver started them after that snapshot, so the
    resumed sweep does not include them (its searcher asks for another configuration instead;
    Optuna keeps theirs as FAIL, ``lost``). Returns the trials the snapshot knows."""
    known = snapshot_trials(directory)
    why = "started after Ray's last snapshot before the driver died: not part of the resumed sweep"
    for trial_id in [t for t in tracker.run_ids if t not in known]:
        if trial_id in tracker.trials:  # reopened: it never ended
            tracker.end_trial(trial_id, "KILLED", {"final_status": LOST, "lost": why})
        else:
            tracker.tag_trial_run(trial_id, {"final_status": LOST, "lost": why})
    return known


def backfill(directory: str, tracker: Any, recorder: Any) -> int:
    """Log to MLflow the results Ray recorded (each trial's ``result.json``) that a killed driver
    never delivered, creating a trial's run when even that was lost; return the steps logged.

    A result counts once per (attempt, epoch); what MLflow already has (``recorder``'s
    last logged step per trial, from :meth:`SweepTracker.resume`) is skipped, and so are the
    trials the resumed sweep does not include (:func:`mark_lost`).
    """
    logged = 0
    if "://" in directory:
        return logged  # results on remote storage: replayed steps are still skipped, nothing backfilled
    known = mark_lost(directory, tracker)
    for path in sorted(glob.glob(os.path.join(directory, "*", "result.json"))):
        rows = [r for r in read_results(path) if "trial_id" in r and "attempt" in r and "epoch" in r]
        if not rows or rows[0]["trial_id"] not in known:
            continue
        tid, name = rows[0]["trial_id"], os.path.basename(os.path.dirname(path))
        if tid not in tracker.run_ids:
            params = hyperparameters(rows[0].get("config", {}))
            tracker.start_trial(tid, name, params, tags={"ray_trial_dir": os.path.dirname(path)})
        last = recorder.logged_up_to(tid) or (0, 0)
        seen: set[tuple[int, int]] = set()
        for row in rows:
            key = (int(row["attempt"]), int(row["epoch"]))
            if key in seen:
                continue
            seen.add(key)
            if key <= last or tid not in tracker.trials:
                continue
            if key[0] > 0 and key[0] not in tracker.trials[tid].attempts:
                tags = {"seed": str(row.get("seed", "")), "restart_reason": ""}
                tracker.start_attempt(tid, key[0], f"{name} attempt {key[0]}", tags)
            metrics = logged_metrics(row)
            tracker.log_metrics(tid, metrics, step=key[1], attempt=key[0])
            last, logged = key, logged + 1
        recorder.mark_logged({tid: last})
    return logged
