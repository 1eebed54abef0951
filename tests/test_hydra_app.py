"""The Hydra app adapter on a miniature lightning-hydra-template app written into a temporary
directory (its ``src/train.py`` knows nothing of the orchestrator): real Hydra composition, a
real ``lightning.Trainer`` reporting to a real :class:`Trial` (no Ray); the preflight error of a
missing config directory through the entry point; one slow sweep through the command line."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from conftest import TrialSink, cli_env, run_cli  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402

from orchestrator import __main__ as entry  # noqa: E402
from orchestrator.integrations.hydra_app import (  # noqa: E402
    callback_overrides,
    compose_app,
    format_value,
    hp_overrides,
    train,
)
from orchestrator.integrations.lightning import ConvergenceCallback  # noqa: E402
from orchestrator.trial import Trial, active  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

APP = {
    "configs/train.yaml": """
        defaults:
          - data: digits
          - model: mlp
          - trainer: cpu
          - callbacks: default
          - _self_
        task_name: train
        seed: 12345
        ckpt_path: null
        train: true
        logger: null
        paths:
          output_dir: ${hydra:runtime.output_dir}
    """,
    "configs/data/digits.yaml": "_target_: src.data.DigitsDataModule\nbatch_size: 64\n",
    "configs/model/mlp.yaml": """
        _target_: src.models.DigitsModule
        width: 32
        optimizer:
          _target_: torch.optim.Adam
          _partial_: true
          lr: 0.001
    """,
    "configs/trainer/cpu.yaml": """
        _target_: lightning.Trainer
        default_root_dir: ${paths.output_dir}
        max_epochs: 10
        accelerator: cpu
        devices: 1
        enable_progress_bar: false
        enable_model_summary: false
        logger: false
        enable_checkpointing: false
    """,
    "configs/callbacks/default.yaml": """
        lr_monitor_off:
          not_a_callback: true
    """,
    "src/__init__.py": "",
    "src/data.py": """
        import lightning as L
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from torch.utils.data import DataLoader, TensorDataset


        class DigitsDataModule(L.LightningDataModule):
            def __init__(self, batch_size=64):
                super().__init__()
                self.batch_size = batch_size

            def setup(self, stage=None):
                x, y = load_digits(return_X_y=True)
                split = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
                x_tr, x_va, y_tr, y_va = split
                as_set = lambda a, b: TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b))
                self.train_set, self.val_set = as_set(x_tr, y_tr), as_set(x_va, y_va)

            def train_dataloader(self):
                return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

            def val_dataloader(self):
                return DataLoader(self.val_set, batch_size=512)
    """,
    "src/models.py": """
        import lightning as L
        from torch import nn


        class DigitsModule(L.LightningModule):
            def __init__(self, optimizer, width=32):
                super().__init__()
                self.optimizer = optimizer
                self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

            def forward(self, x):
                return self.net(x)

            def training_step(self, batch, _index):
                x, y = batch
                loss = nn.functional.cross_entropy(self(x), y)
                self.log("train/loss", loss, on_step=False, on_epoch=True)
                return loss

            def validation_step(self, batch, _index):
                x, y = batch
                logits = self(x)
                self.log("val/loss", nn.functional.cross_entropy(logits, y))
                self.log("val/acc", (logits.argmax(dim=1) == y).float().mean())

            def configure_optimizers(self):
                return self.optimizer(params=self.parameters())
    """,
    "src/train.py": """
        import hydra
        import lightning as L
        from omegaconf import DictConfig


        def instantiate_callbacks(callbacks_cfg):
            callbacks = []
            for _, cb_conf in (callbacks_cfg or {}).items():
                if isinstance(cb_conf, DictConfig) and "_target_" in cb_conf:
                    callbacks.append(hydra.utils.instantiate(cb_conf))
            return callbacks


        def train(cfg: DictConfig):
            if cfg.get("seed"):
                L.seed_everything(cfg.seed, workers=True)
            datamodule = hydra.utils.instantiate(cfg.data)
            model = hydra.utils.instantiate(cfg.model)
            callbacks = instantiate_callbacks(cfg.get("callbacks"))
            trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
            if cfg.get("train"):
                trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            return dict(trainer.callback_metrics), {"cfg": cfg, "trainer": trainer, "callbacks": callbacks}
    """,
    "hpo/experiment/tune.yaml": """
        # @package _global_
        defaults:
          - override /trainable: function
        name: hydra_app
        metric: val_acc
        mode: max
        trainable:
          fn:
            _target_: orchestrator.integrations.hydra_app.train
            _partial_: true
            task: src.train:train
            config_dir: configs
            config_name: train.yaml
            params: {lr: model.optimizer.lr, batch_size: data.batch_size}
            metrics: {val_acc: val/acc, val_loss: val/loss}
          metrics:
            chance: 0.1
          hparams:
            lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}
            batch_size: {type: choice, values: [32, 64]}
    """,
}
FN = {
    "task": "src.train:train",
    "config_dir": "configs",
    "config_name": "train.yaml",
    "params": {"lr": "model.optimizer.lr", "batch_size": "data.batch_size"},
    "metrics": {"val_acc": "val/acc", "val_loss": "val/loss"},
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The miniature app's directory (one per module: its ``src`` package is imported once)."""
    root = tmp_path_factory.mktemp("app")
    for name, text in APP.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def _run(
    app: Path, tmp: Path, hp: dict, *, seed: int = 7, epochs: int = 2, source=None
) -> tuple[TrialSink, tuple]:
    """Run the adapter in ``app`` for one trial; return its sink and what the app's task returned."""
    run = TrialSink(tmp)
    trial = Trial(seed=seed, attempt=0, epochs=epochs, hp=hp, sink=run, source=source)
    with active(trial):
        returned = train(dict(hp), trial, **FN)
    return run, returned


@pytest.fixture
def in_app(app: Path, monkeypatch) -> Path:
    monkeypatch.chdir(app)
    monkeypatch.delenv("TUNE_ORIG_WORKING_DIR", raising=False)
    return app


def test_the_apps_task_reports_each_epoch_with_the_trials_values(in_app, tmp_path):
    GlobalHydra.instance().clear()
    run, (metrics, objects) = _run(in_app, tmp_path, {"lr": 0.005, "batch_size": 32}, epochs=3)
    assert [r["epoch"] for r in run.results] == [1, 2, 3]  # the app's max_epochs 10 overridden
    for result in run.results:
        assert {"val_acc", "val_loss", "grad_norm", "dead_frac"} <= set(result)
        assert result["lr"] == 0.005 and result["seed"] == 7  # the hp reached the optimizer
    assert run.results[-1]["val_acc"] == pytest.approx(float(metrics["val/acc"]))
    assert run.results[-1]["val_acc"] > 0.5
    cfg, callbacks = objects["cfg"], objects["callbacks"]
    assert (cfg.seed, cfg.trainer.max_epochs, cfg.data.batch_size, cfg.ckpt_path) == (7, 3, 32, None)
    assert "hydra" not in cfg
    assert os.path.isdir(objects["trainer"].default_root_dir)  # ${hydra:runtime.output_dir}, made
    assert [type(c) for c in callbacks] == [ConvergenceCallback]
    assert objects["trainer"].train_dataloader.batch_size == 32
    assert not GlobalHydra.instance().is_initialized()  # Hydra's state is as it was


def test_the_seed_is_the_trials_not_the_apps(in_app, tmp_path):
    def first(seed: int, name: str) -> dict:
        return _run(in_app, tmp_path / name, {"lr": 0.003}, seed=seed, epochs=1)[0].results[0]

    a, again, other = first(1, "a"), first(1, "again"), first(2, "other")
    assert a["val_loss"] == again["val_loss"] and a["val_loss"] != other["val_loss"]


def test_the_same_attempt_resumes_from_its_checkpoint_replaying_it_once(in_app, tmp_path):
    first, _ = _run(in_app, tmp_path / "first", {"lr": 0.003}, epochs=3)
    source = lambda: contextlib.nullcontext(first.checkpoints[2])  # noqa: E731
    second, (_, objects) = _run(in_app, tmp_path / "second", {"lr": 0.003}, epochs=3, source=source)
    assert [(r["epoch"], r.get("replayed", False)) for r in second.results] == [(2, True), (3, False)]
    assert objects["cfg"].ckpt_path.endswith("lightning.ckpt")


def test_values_are_written_so_hydra_reads_them_back_equal(tmp_path):
    parser = OverridesParser.create()
    values = [1e-05, 0.001, 3.0, -2.5e-12, 1e16, 7, True, False, None, "relu", "it's a:b", "1e-3", [1, "x"]]
    for value in values:
        parsed = parser.parse_override(f"k={format_value(value)}").value()
        assert parsed == value and type(parsed) is type(value), (value, format_value(value))
    (tmp_path / "model").mkdir()
    assert hp_overrides({"model": "cnn", "lr": 0.1}, {"lr": "model.lr"}, str(tmp_path)) == [
        "model='cnn'",  # a config group of the app: its option is chosen
        "++model.lr=0.1",
    ]


@pytest.mark.parametrize("text", ["seed: 1\n", "seed: 1\ncallbacks: null\n"])
def test_the_callback_is_added_to_an_app_without_callbacks(tmp_path, text):
    (tmp_path / "train.yaml").write_text(text)
    cfg = compose_app(str(tmp_path), "train", callback_overrides({"val_acc": "val/acc"}))
    assert cfg.callbacks == {
        "convergence": {
            "_target_": "orchestrator.integrations.lightning.ConvergenceCallback",
            "metrics": {"val_acc": "val/acc"},
        }
    }
    assert not GlobalHydra.instance().is_initialized()


def test_a_missing_config_dir_is_one_line_at_preflight(app, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(app)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    args = ["--config-dir", "hpo", "experiment=tune", "trainable.fn.config_dir=nowhere", "report=false"]
    monkeypatch.setattr(sys, "argv", ["orchestrator", *args, f"storage.path={tmp_path / 'results'}"])
    with pytest.raises(SystemExit) as exited:
        entry.main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err
    assert err == f"error: trainable.fn.config_dir: no directory {app / 'nowhere'}"
    assert not (tmp_path / "ray").exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_app_sweeps_through_the_command_line(app, tmp_path):
    """Two trials of 3 epochs from the app's directory: exit 0, per-epoch val_acc in MLflow."""
    import mlflow

    db = tmp_path / "mlflow.db"
    env = cli_env(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = run_cli(
        app,
        "--config-dir",
        str(app / "hpo"),
        "experiment=tune",
        "num_samples=2",
        "trainable.epochs=3",
        "verbose=0",
        "report=false",
        "tracking.log_model=false",
        f"storage.path={tmp_path / 'results'}",
        f"tracking.uri=sqlite:///{db}",
        env=env,
        timeout=120,
    )
    assert "sweep 'hydra_app' finished in" in out and "2 trials" in out
    client = mlflow.tracking.MlflowClient(f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "hydra_app"]
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    assert len(children) == 2
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == [1, 2, 3]
