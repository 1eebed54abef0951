"""Bad input: one clear line, exit code 2, nothing started, nothing recorded lost.

Every row runs the entry point (``python -m orchestrator debug=default ...``, or
``resume=<dir>`` alone) in a fresh directory, in this process (``orchestrator.__main__.main``
with its argv, environment and working directory), and checks that

- it exits with code 2, prints nothing on stdout and exactly one line on stderr, of the form
  ``error: <key>: <problem>``, naming the offending key and the value or the problem;
- nothing started: no Ray session (``$RAY_TMPDIR/ray`` never appears), no results directory
  (``storage.path``), no MLflow store or run;
- nothing recorded is lost: every second row starts in a directory that already holds an
  MLflow store with a finished run (and its artifact) and an earlier sweep's results; every
  file there is byte-for-byte the same afterwards, and the store (read with sqlite3,
  read-only) still has exactly that one run. The other rows start empty and must stay empty.

A few rows (:data:`SUBPROCESS`) also run as the real command line in a subprocess (slow): the
exit code and the single line hold there too, with no traceback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli_env

from orchestrator import __main__ as entry

# (id, overrides, key the error line must name, what it must also say, setup, extra env)
Setup = Callable[[Path], None]


def _file(work: Path) -> None:
    (work / "afile").write_text("a regular file, not a directory\n")


def _read_only_dir(work: Path) -> None:
    (work / "ro").mkdir()
    (work / "ro").chmod(0o555)


def _empty_data(work: Path) -> None:
    (work / "data").mkdir()


def _bad_idx(work: Path) -> None:
    (work / "data").mkdir()
    (work / "data" / "train-images-idx3-ubyte").write_bytes(b"<html>not found</html>" * 4)
    (work / "data" / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, 3) + bytes(3))


def _mismatched_idx(work: Path) -> None:
    (work / "data").mkdir()
    images = struct.pack(">IIII", 0x0803, 5, 28, 28) + bytes(5 * 28 * 28)
    (work / "data" / "train-images-idx3-ubyte").write_bytes(images)
    (work / "data" / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, 4) + bytes(4))


def _bad_cifar(work: Path) -> None:
    batches = work / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "data_batch_1").write_bytes(b"this is not a pickle")


def _user_package(work: Path) -> None:
    """A user's package beside the launch directory whose module has no ``train``."""
    (work / "mypkg").mkdir()
    (work / "mypkg" / "__init__.py").write_text("")
    (work / "mypkg" / "train.py").write_text("def fit(hp, trial):\n    pass\n")


def _user_config(text: str | bytes) -> Setup:
    """A user's own config directory ``hpo/`` whose ``experiment/mine.yaml`` holds ``text``."""

    def setup(work: Path) -> None:
        (work / "hpo" / "experiment").mkdir(parents=True)
        path = work / "hpo" / "experiment" / "mine.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def _deleted_experiment(work: Path) -> None:
    """The sweep's MLflow experiment ('debug') deleted, as ``mlflow experiments delete`` does."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    client.delete_experiment(client.get_experiment_by_name("debug").experiment_id)  # a recorded row


def _other_database(work: Path) -> None:
    """A SQLite file of another program (MLflow's store has an ``experiments`` table, say)."""
    con = sqlite3.connect(work / "other.db")
    con.execute("CREATE TABLE experiments (id INTEGER)")
    con.commit()
    con.close()


def _loss_study(work: Path) -> None:
    """An earlier sweep's Optuna study (``optuna.db`` beside the MLflow store) that minimised
    val_loss: a sweep of val_acc cannot continue it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{work / 'optuna.db'}", study_name="debug_20260101-000000", direction="minimize"
    )
    study.set_user_attr("sweep", "debug")
    study.set_user_attr("metric", "val_loss")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))


def _checkpoint(kind: str) -> Setup:
    """``ckpt/checkpoint.pt`` in the launch directory: ``junk`` (not a torch file) or ``cnn`` (a
    real checkpoint of a CNN, whose tensors fit none of the debug sweep's MLPs)."""

    def setup(work: Path) -> None:
        (work / "ckpt").mkdir()
        path = work / "ckpt" / "checkpoint.pt"
        if kind == "junk":
            path.write_bytes(b"<html>not found</html>")
            return
        import torch

        from trainables.hparams import TrialParams
        from trainables.models import build_model

        model = build_model("cnn", (1, 8, 8), 10, TrialParams.from_config({"width": 8}))
        torch.save({"version": 2, "epoch": 1, "state": {"model": model.state_dict()}}, path)

    return setup


#: A user's experiment file (``--config-dir hpo experiment=mine``) and its first lines.
MINE = ["--config-dir", "hpo", "experiment=mine"]
GLOBAL = "# @package _global_\n"
#: A hyperparameter name MLflow would refuse as a param key, in a user's file.
ODD_HPARAM = GLOBAL + (
    "defaults:\n  - override /trainable: function\nmetric: val_mae\ntrainable:\n  fn: mypkg.train:fit\n"
    "  hparams:\n    learning rate!: {type: loguniform, low: 1.0e-4, high: 1.0e-1}\n"
)

NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}
#: A user's function with a space and a metric, for the rows about trainable=function.
OWN = ["trainable=function", "+trainable.hparams.lr={type:loguniform,low:1e-4,high:1e-1}", "metric=val_mae"]

#: Two objectives of a built-in trainable, as an override's value.
TWO_OBJECTIVES = "[{metric: val_acc, mode: max}, {metric: params, mode: min}]"

ROWS: list[tuple[str, list[str], str, str, Setup | None, dict[str, str] | None]] = [
    # unknown options and keys
    ("unknown-key", ["foo=1"], "foo", "unknown key (known here: name, seed", None, None),
    ("unknown-key-appended", ["+foo=1"], "foo", "unknown key", None, None),
    ("unknown-nested-key", ["trainable.data.rot=x"], "trainable.data.rot", "known here: root", None, None),
    ("unknown-group-option", ["trainable=transformer"], "trainable", "no such option 'transformer'",
     None, None),
    ("unknown-experiment", ["+experiment=nope"], "experiment", "no such option 'nope'", None, None),
    ("hparam-without-plus", ["trainable.hparams.colour=red"], "trainable.hparams.colour",
     "not in the search space (add a hyperparameter with a leading +: +trainable.hparams.colour=...)",
     None, None),
    ("own-hparam-without-plus", [*OWN, "trainable.fn=mypkg.train:fit", "trainable.hparams.width=3"],
     "trainable.hparams.width", "add a hyperparameter with a leading +", _user_package, None),
    ("unknown-hparam", ["+trainable.hparams.colour=red"], "trainable.hparams.colour",
     "unknown hyperparameter", None, None),
    ("unknown-dataset", ["trainable.dataset=imagenet"], "trainable.dataset", "got 'imagenet'", None, None),
    ("unknown-cluster-mode", ["cluster.mode=k8s"], "cluster.mode", "got 'k8s'", None, None),
    # wrong types
    ("string-for-int", ["num_samples=many"], "num_samples", "must be an integer, got 'many'", None, None),
    ("float-for-int", ["trainable.epochs=2.5"], "trainable.epochs", "must be an integer, got 2.5",
     None, None),
    ("float-for-bool", ["search.multivariate=0.5"], "search.multivariate", "must be true or false, got 0.5",
     None, None),
    ("string-for-float", ["scheduler.reduction_factor=fast"], "scheduler.reduction_factor",
     "must be a number, got 'fast'", None, None),
    ("number-for-mapping", ["trainable.hparams=5"], "trainable.hparams", "must be a mapping, got 5",
     None, None),
    ("number-for-group", ["trainable=5"], "trainable", "must be a string or a list", None, None),
    ("empty-string", ["storage.path=''"], "storage.path", "must be a non-empty string", None, None),
    # a sweep name that would leave storage.path or hide its directory
    ("name-escapes-storage", ["name=../../escape"], "name", "got '../../escape'", None, None),
    ("name-with-a-slash", ["name=a/b"], "name", "got 'a/b'", None, None),
    ("name-hidden", ["name=.hidden"], "name", "not starting with '.'", None, None),
    ("name-too-long", ["name=" + "n" * 101], "name", "1-100 printable characters", None, None),
    ("name-not-printable", ["name=tab\tname"], "name", "printable", None, None),
    # impossible values and ranges
    ("negative-epochs", ["trainable.epochs=-1"], "trainable.epochs", "must be >= 1, got -1", None, None),
    ("zero-samples", ["num_samples=0"], "num_samples", "must be >= 1, got 0", None, None),
    ("val-fraction-one", ["trainable.data.val_fraction=1.0"], "trainable.data.val_fraction",
     "must be in (0, 1), got 1.0", None, None),
    ("low-above-high", ["trainable.hparams.dropout.low=0.4", "trainable.hparams.dropout.high=0.1"],
     "trainable.hparams.dropout", "low must be < high", None, None),
    ("log-scale-from-zero", ["trainable.hparams.lr.low=0"], "trainable.hparams.lr.low",
     "must be > 0 for a log scale, got 0", None, None),
    ("choice-without-values", ["trainable.hparams.width.values=[]"], "trainable.hparams.width.values",
     "must be a non-empty list", None, None),
    ("hparam-out-of-domain", ["trainable.hparams.momentum=1.5"], "trainable.hparams.momentum", "got 1.5",
     None, None),
    ("reduction-factor-one", ["scheduler.reduction_factor=1"], "scheduler.reduction_factor", "must be > 1",
     None, None),
    ("threshold-out-of-range", ["scheduler.thresholds.dead_frac=1.5"], "scheduler.thresholds.dead_frac",
     "must be float in (0, 1], got 1.5", None, None),
    ("unknown-threshold", ["+scheduler.thresholds.patience=3"], "scheduler.thresholds.patience",
     "unknown threshold", None, None),
    ("restart-budget-above-one", ["scheduler.restart_budget=2"], "scheduler.restart_budget",
     "must be in [0, 1]", None, None),
    ("metric-not-in-contract", ["metric=accuracy"], "metric", "must be one of val_acc", None, None),
    ("mode-not-min-max", ["mode=up"], "mode", "must be one of min, max, got 'up'", None, None),
    ("mode-against-metric", ["mode=min"], "mode", "val_acc is better when max", None, None),
    # a user's own train function
    ("fn-missing", OWN, "trainable.fn", "required with trainable=function", None, None),
    ("fn-not-module-function", [*OWN, "trainable.fn=mypkg.train"], "trainable.fn", "must be module:function",
     None, None),
    ("fn-no-such-module", [*OWN, "trainable.fn=nosuchpkg.train:train"], "trainable.fn",
     "cannot import 'nosuchpkg.train'", None, None),
    ("fn-not-defined", [*OWN, "trainable.fn=mypkg.train:train"], "trainable.fn", "defines no 'train'",
     _user_package, None),
    ("fn-target-not-partial", [*OWN, "trainable.fn={_target_:mypkg.train.fit}"], "trainable.fn._partial_",
     "must be true", _user_package, None),
    ("fn-with-built-in", ["trainable.fn=mypkg.train:train"], "trainable.fn", "only with trainable=function",
     None, None),
    ("mode-not-in-name", [*OWN, "trainable.fn=mypkg.train:fit", "metric=score"], "mode",
     "required for metric 'score'", _user_package, None),
    ("hparam-reserved", [*OWN, "trainable.fn=mypkg.train:fit", "+trainable.hparams.attempt=2"],
     "trainable.hparams.attempt", "reserved", _user_package, None),
    ("scale-not-positive", ["trainable.metrics.scale=0"], "trainable.metrics.scale", "must be > 0",
     None, None),
    ("unknown-search-algorithm", ["search.algorithm=annealing"], "search.algorithm", "got 'annealing'",
     None, None),
    ("bad-search-option", ["search=cmaes", "search.cmaes_popsize=1"], "search.cmaes_popsize",
     "must be >= 2, got 1", None, None),
    ("unknown-scheduler", ["scheduler.name=hyperband"], "scheduler.name", "got 'hyperband'", None, None),
    # overrides Hydra cannot use
    ("override-syntax", ["num_samples=[1,"], "num_samples", "cannot parse the override", None, None),
    ("missing-interpolation", ["name=${nope}"], "name", "Interpolation key 'nope' not found", None, None),
    ("value-list", ["num_samples=2,4"], "num_samples", "comma-separated", None, None),
    ("cannot-delete", ["~trainable.nope"], "trainable.nope", "no such key", None, None),
    ("multirun", ["--multirun"], "--multirun", "not supported", None, None),
    # resources larger than the machine
    ("cpus-beyond-machine", ["resources.cpus_per_trial=4096"], "resources.cpus_per_trial",
     "4096 but this machine has", None, None),
    ("cpus-beyond-cluster", ["cluster.num_cpus=1", "resources.cpus_per_trial=2"], "resources.cpus_per_trial",
     "cluster.num_cpus is 1", None, None),
    ("gpu-none-visible", ["resources.gpus_per_trial=1"], "resources.gpus_per_trial",
     "this machine has 0 GPUs", None, NO_GPU),
    ("gpu-none-configured", ["cluster.num_gpus=0", "resources.gpus_per_trial=0.25"],
     "resources.gpus_per_trial", "cluster.num_gpus is 0", None, None),
    # places that cannot be written or read
    ("storage-under-a-file", ["storage.path=afile/results"], "storage.path", "cannot write to", _file, None),
    ("storage-read-only-dir", ["storage.path=ro/results"], "storage.path", "cannot write to",
     _read_only_dir, None),
    ("storage-in-proc", ["storage.path=/proc/orchestrator-results"], "storage.path", "cannot write to",
     None, None),
    ("data-root-missing", ["trainable.dataset=mnist", "trainable.data.root=nowhere"], "trainable.data.root",
     "does not exist", None, None),
    ("data-root-unset", ["trainable.dataset=cifar10"], "trainable.data.root",
     "required for dataset 'cifar10'", None, None),
    ("data-root-wrong-files", ["trainable.dataset=fashion_mnist", "trainable.data.root=data"],
     "trainable.data.root", "no train-images-idx3-ubyte", _empty_data, None),
    ("data-file-malformed", ["trainable.dataset=mnist", "trainable.data.root=data"], "trainable.data.root",
     "malformed IDX file", _bad_idx, None),
    ("data-files-mismatched", ["trainable.dataset=mnist", "trainable.data.root=data"], "trainable.data.root",
     "holds 4 labels", _mismatched_idx, None),
    ("data-cifar-not-pickle", ["trainable.dataset=cifar10", "trainable.data.root=data"],
     "trainable.data.root", "cannot unpickle", _bad_cifar, None),
    ("tracking-uri-no-scheme", ["tracking.uri=mlflow.db"], "tracking.uri", "cannot use 'mlflow.db'",
     None, None),
    ("tracking-uri-no-host", ["tracking.uri=http://"], "tracking.uri", "no host", None, None),
    ("tracking-server-down", ["tracking.uri=http://127.0.0.1:1"], "tracking.uri",
     "nothing answers at 127.0.0.1:1", None, None),
    ("tracking-store-under-a-file", ["tracking.uri=sqlite:///afile/mlflow.db"], "tracking.uri",
     "cannot write to", _file, None),
    ("secret-value-hidden", ["tracking.token=12345"], "tracking.token", "got '***'", None, None),
    # a cluster that does not answer; a resume path that is not a sweep (cluster=ray, resume=)
    ("cluster-unreachable", ["cluster=ray", "cluster.address=127.0.0.1:1", "cluster.connect_timeout_s=1"],
     "cluster.address", "cannot reach the Ray cluster at '127.0.0.1:1'", None, None),
    ("resume-nowhere", ["resume=nowhere"], "resume", "is not a directory", None, None),
    ("resume-not-a-sweep", ["resume=data"], "resume", "is not a sweep directory", _empty_data, None),
    # a user's own config files (--config-dir): the key, and the file that set it
    ("user-config-wrong-type", MINE, "trainable.checkpoint_every",
     "must be an integer, got 'often' (set in hpo/experiment/mine.yaml)",
     _user_config(GLOBAL + "trainable:\n  checkpoint_every: often\n"), None),
    ("user-config-unknown-key", MINE, "trainable.epocs", "unknown key (known here: model, dataset, epochs",
     _user_config(GLOBAL + "trainable:\n  epocs: 3\n"), None),
    ("user-config-not-yaml", MINE, "experiment",
     "cannot parse hpo/experiment/mine.yaml, line 4, column 10: expected ',' or ']'",
     _user_config(GLOBAL + "trainable:\n  fn: [mypkg.train:fit\n  hparams: x\n"), None),
    ("user-config-duplicate-key", MINE, "experiment",
     "cannot parse hpo/experiment/mine.yaml, line 3, column 1: found duplicate key",
     _user_config(GLOBAL + "seed: 1\nseed: 2\n"), None),
    ("user-config-not-utf8", MINE, "experiment", "hpo/experiment/mine.yaml is not UTF-8 text",
     _user_config(GLOBAL.encode() + b"name: caf\xe9\n"), None),
    ("user-config-odd-hparam-name", MINE, "trainable.hparams",
     "got 'learning rate!' (set in hpo/experiment/mine.yaml)", _user_config(ODD_HPARAM), None),
    # names from the command line: bytes that are not UTF-8 (PEP 383 surrogates), escapes, length
    ("name-not-utf8", ["name='ab\udcffc'"], "name", r"got 'ab\udcffc'", None, None),
    ("name-escape-sequence", ["name='a\x1b[31mred'"], "name", r"got 'a\x1b[31mred'", None, None),
    ("name-too-many-bytes", ["name='" + "\u65e5" * 90 + "'"], "name", "(200 bytes in UTF-8)", None, None),
    ("name-very-long", ["name=" + "n" * 5000], "name", "... (5000 characters)", None, None),
    ("hparam-name-odd", [*OWN, "trainable.fn=mypkg.train:fit", "+trainable.hparams.lr$x=0.1"],
     "trainable.hparams", "got 'lr$x'", _user_package, None),
    # the Optuna study's store; an earlier sweep to continue; configurations to try first
    ("study-storage-not-a-url", ["search.storage=optuna"], "search.storage", "expected a database URL",
     None, None),
    ("study-storage-under-a-file", ["search.storage=sqlite:///afile/optuna.db"], "search.storage",
     "cannot write to", _file, None),
    ("study-journal-under-a-file", ["search.storage=afile/study.log"], "search.storage", "cannot write to",
     _file, None),
    ("study-store-of-another-program", ["search.storage=sqlite:///other.db"], "search.storage",
     "is not an Optuna store (it holds the tables experiments); name another file", _other_database, None),
    ("study-store-not-sqlite", ["search.storage=sqlite:///afile"], "search.storage",
     "is not a SQLite database", _file, None),
    ("study-server-down", ["search.storage=postgresql://me:hunter2@127.0.0.1:1/optuna"], "search.storage",
     "cannot connect to postgresql://me:***@127.0.0.1:1/optuna", None, None),
    ("continue-from-unknown", ["search.continue_from=nosuch"], "search.continue_from",
     "no study or sweep named 'nosuch' in sqlite:///", None, None),
    ("continue-from-not-a-sweep-dir", ["search.continue_from=results/debug_earlier"], "search.continue_from",
     "is not a sweep directory (no readable orchestrator.json)", None, None),
    ("continue-from-other-objective", ["search.continue_from=debug"], "search.continue_from",
     "'debug_20260101-000000' optimised val_loss, this sweep val_acc", _loss_study, None),
    ("continue-from-with-grid", ["search=grid", "search.continue_from=debug"], "search.continue_from",
     "not with search=grid", None, None),
    ("enqueue-unknown-hparam", ["search.enqueue=[{lr:0.01,nope:1}]"], "search.enqueue[0].nope",
     "not a searched hyperparameter (unknown; searched: optimizer, lr", None, None),
    ("enqueue-fixed-hparam", ["trainable.hparams.width=64", "search.enqueue=[{width:128}]"],
     "search.enqueue[0].width", "not a searched hyperparameter (fixed at 64 in this sweep", None, None),
    ("enqueue-outside-space", ["search.enqueue=[{lr:0.01},{lr:0.5}]"], "search.enqueue[1].lr",
     "0.5 is outside [0.0001, 0.03]", None, None),
    ("enqueue-not-a-choice", ["search.enqueue=[{optimizer:adamw}]"], "search.enqueue[0].optimizer",
     "'adamw' is not one of ['sgd_momentum', 'adam', 'rmsprop']", None, None),
    ("enqueue-best-of-unknown", ["search.enqueue={best_of:nosuch,count:2}"], "search.enqueue[0].best_of",
     "no study or sweep named 'nosuch'", None, None),
    ("enqueue-more-than-samples", ["num_samples=1", "search.enqueue=[{lr:0.01},{lr:0.02}]"], "search.enqueue",
     "2 configurations to try first, but num_samples is 1", None, None),
    # several objectives
    ("objectives-unknown-mode", ["objectives=[{metric: val_acc, mode: up}, {metric: params, mode: min}]"],
     "objectives[0].mode", "must be max or min, got 'up'", None, None),
    ("objectives-duplicate", ["objectives=[{metric: val_acc, mode: max}, {metric: val_acc, mode: max}]"],
     "objectives[1].metric", "'val_acc' is listed twice", None, None),
    ("objectives-one", ["objectives=[{metric: val_acc, mode: max}]"], "objectives",
     "must be a list of at least 2", None, None),
    ("objectives-metric-conflict", ["metric=val_loss", f"objectives={TWO_OBJECTIVES}"], "metric",
     "conflicts with objectives (the first objective, 'val_acc', is the metric), got 'val_loss'", None, None),
    ("objectives-mode-conflict", ["mode=min", f"objectives={TWO_OBJECTIVES}"], "mode",
     "conflicts with objectives (the first objective's mode is 'max'), got 'min'", None, None),
    ("objectives-never-reported", ["objectives=[{metric: val_acc, mode: max}, {metric: f1, mode: max}]"],
     "objectives[1].metric", "the built-in trainables never report 'f1'", None, None),
    ("objectives-cmaes", ["search=cmaes", f"objectives={TWO_OBJECTIVES}"], "search.algorithm",
     "cmaes optimises one objective; with objectives use nsga2, tpe, random, grid", None, None),
    ("objectives-asha", ["scheduler=asha", f"objectives={TWO_OBJECTIVES}"], "scheduler.name",
     "asha ranks trials on one objective", None, None),
    # the sweep's MLflow experiment was deleted: not restored behind the user's back
    ("experiment-deleted", [], "tracking.experiment",
     "'debug' (id 1) is deleted; restore it (mlflow experiments restore --experiment-id 1",
     _deleted_experiment, None),
    # a warm start (trainable.init_from) that cannot be read or fits no model of the space
    ("init-from-missing", ["trainable.init_from=nowhere/checkpoint.pt"], "trainable.init_from",
     "no file or directory", None, None),
    ("init-from-unknown-model", ["trainable.init_from=models:/nosuch/1"], "trainable.init_from",
     "cannot load models:/nosuch/1: Registered Model with name=nosuch not found", None, None),
    ("init-from-dir-without-checkpoint", ["trainable.init_from=data"], "trainable.init_from",
     "no checkpoint.pt in", _empty_data, None),
    ("init-from-malformed", ["trainable.init_from=ckpt"], "trainable.init_from", "cannot read",
     _checkpoint("junk"), None),
    ("init-from-no-store", ["trainable.init_from=runs:/0123/model"], "trainable.init_from",
     "no MLflow store at", None, None),
    ("init-from-other-architecture", ["trainable.init_from=ckpt/checkpoint.pt"], "trainable.init_from",
     "matches the model's", _checkpoint("cnn"), None),
    ("data-classes-out-of-range", ["trainable.data.classes=[0,12]"], "trainable.data.classes",
     "digits has the labels 0..9, got 12", None, None),
]  # fmt: skip


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding what an earlier sweep left: an MLflow store with one finished run
    (a param, a metric, a text artifact) and a results directory."""
    from mlflow.tracking import MlflowClient

    seed = tmp_path_factory.mktemp("recorded")
    client = MlflowClient(tracking_uri=f"sqlite:///{seed / 'mlflow.db'}")
    exp = client.create_experiment("debug", artifact_location=(seed / "mlartifacts").as_uri())
    run = client.create_run(exp, run_name="earlier sweep")
    client.log_param(run.info.run_id, "num_samples", 4)
    client.log_metric(run.info.run_id, "best_val_acc", 0.9)
    client.log_text(run.info.run_id, "name: debug\n", "config.yaml")
    client.set_terminated(run.info.run_id, "FINISHED")
    (seed / "results" / "debug_earlier").mkdir(parents=True)
    (seed / "results" / "debug_earlier" / "experiment_state.json").write_text("{}\n")
    return seed


def _command(overrides: list[str]) -> list[str]:
    """The tiny debug sweep with ``overrides``; ``resume=<dir>`` takes no other argument; Hydra's
    options (``--config-dir DIR``) come before the overrides."""
    if overrides and overrides[0].startswith("resume="):
        return overrides
    options = overrides[:2] if overrides[:1] == ["--config-dir"] else []
    return [*options, "debug=default", *overrides[len(options) :]]


def _tree(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``: relative path -> sha256 of the content (or 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _runs(db: Path) -> list[tuple[str, str]]:
    """(run id, status) of every run in a SQLite MLflow store, read-only."""
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return sorted(con.execute("SELECT run_uuid, status FROM runs").fetchall())
    finally:
        con.close()


#: Rows that also run as a subprocess: the real exit code and stderr, no traceback.
SUBPROCESS = (
    "unknown-key",
    "string-for-int",
    "data-file-malformed",
    "secret-value-hidden",
    "resume-nowhere",
    "user-config-not-yaml",
    "name-not-utf8",
    "experiment-deleted",
    "continue-from-unknown",
    "enqueue-outside-space",
    "init-from-other-architecture",
)


def _in_process(
    work: Path, args: list[str], env: dict[str, str], monkeypatch, capsys
) -> tuple[int, str, str]:
    """Run the entry point here with ``args`` in ``work``; return (exit code, stdout, stderr)."""
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["orchestrator", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        entry.main()
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def _subprocess(work: Path, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``python -m orchestrator ARGS`` in ``work``; return (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=work,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _check_row(tmp_path: Path, recorded: Path, index: int, run: Callable[..., tuple[int, str, str]]) -> None:
    """Run row ``index`` of :data:`ROWS` with ``run(work, args, env)`` and check what it left."""
    _, overrides, key, says, setup, env = ROWS[index]
    if setup is _read_only_dir and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories (storage-under-a-file covers this case)")
    if overrides[:1] == ["storage.path=/proc/orchestrator-results"] and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    work, ray_tmp = tmp_path / "work", tmp_path / "raytmp"
    keep = index % 2 == 1  # every second row starts where an earlier sweep left its records
    if keep:
        shutil.copytree(recorded, work)
        runs_before = _runs(work / "mlflow.db")
    else:
        work.mkdir()
    if setup is not None:
        setup(work)
    before = _tree(work)
    try:
        code, stdout, stderr = run(work, _command(overrides), {"RAY_TMPDIR": str(ray_tmp), **(env or {})})
    finally:
        if setup is _read_only_dir:
            (work / "ro").chmod(0o755)

    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"error: {key}: "), lines[0]
    assert says in lines[0], lines[0]
    assert stdout == ""
    assert not (ray_tmp / "ray").exists(), "a Ray session was started"
    assert _tree(work) == before, "files were created, changed or removed"
    if keep:
        assert _runs(work / "mlflow.db") == runs_before == [(runs_before[0][0], "FINISHED")]
    else:
        assert not (work / "mlflow.db").exists() and not (work / "results").exists()


@pytest.mark.parametrize("index", [pytest.param(i, id=row[0]) for i, row in enumerate(ROWS)])
def test_bad_input(tmp_path: Path, recorded: Path, index: int, monkeypatch, capsys) -> None:
    _check_row(tmp_path, recorded, index, lambda *a: _in_process(*a, monkeypatch, capsys))


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", [pytest.param(i, id=row[0]) for i, row in enumerate(ROWS) if row[0] in SUBPROCESS]
)
def test_bad_input_on_the_command_line(tmp_path: Path, recorded: Path, index: int) -> None:
    _check_row(tmp_path, recorded, index, _subprocess)


def test_table_is_large_enough() -> None:
    """The issue asks for at least 25 bad inputs; ids are unique; the subprocess rows exist."""
    ids = [row[0] for row in ROWS]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)
    assert set(SUBPROCESS) <= set(ids)
