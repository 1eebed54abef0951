"""The Lightning integration: a real ``lightning.Trainer`` fitting the example's DigitsNet on
scikit-learn's digits, reporting to a real :class:`Trial` whose sink keeps the results (no Ray);
one slow test runs the example's sweep through the command line (real Ray and MLflow)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")

from conftest import TrialSink, cli_env, run_cli  # noqa: E402

from orchestrator.contract import CHECKPOINT_FILE  # noqa: E402
from orchestrator.integrations.lightning import LIGHTNING_CKPT, ConvergenceCallback, resume_path  # noqa: E402
from orchestrator.trial import Trial, active  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_digits"
sys.path.insert(0, str(EXAMPLE))
from digitnet.model import loaders, make_model  # noqa: E402

MAPPED = {"val_acc": "val_acc", "val_loss": "val_loss", "train_loss": "train_loss"}


class Steps(L.Callback):
    """Records each optimizer step's gradient norm and the state when training starts."""

    def __init__(self) -> None:
        self.norms: dict[int, list[float]] = {}
        self.start_state: dict[str, torch.Tensor] = {}
        self.start_step = -1

    def on_train_start(self, trainer, module) -> None:
        self.start_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.start_step = trainer.global_step

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.setdefault(trainer.current_epoch + 1, []).append(
            float(torch.nn.utils.get_total_norm(grads))
        )


def _trial(
    run: TrialSink, *, epochs: int = 3, attempt: int = 0, seed: int = 7, source=None, every: int = 2
) -> Trial:
    return Trial(
        seed=seed, attempt=attempt, epochs=epochs, hp={}, sink=run, source=source, checkpoint_every=every
    )


def _fit(
    callback: ConvergenceCallback, *, max_epochs: int = 3, extra=(), ckpt_path=None, **kwargs
) -> L.Trainer:
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=[callback, *extra],
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        **kwargs,
    )
    train_loader, val_loader = loaders()
    trainer.fit(make_model({"lr": 1e-3}), train_loader, val_loader, ckpt_path=ckpt_path)
    return trainer


def _from(directory: str):
    return lambda: contextlib.nullcontext(directory)


def test_each_validated_epoch_is_reported_once_with_the_watched_values(tmp_path):
    run, steps = TrialSink(tmp_path), Steps()
    callback = ConvergenceCallback(MAPPED, trial=_trial(run))
    trainer = _fit(callback, extra=[steps], num_sanity_val_steps=2)
    assert [r["epoch"] for r in run.results] == [1, 2, 3]  # the sanity check is not reported
    for result in run.results:
        assert set(result) == {*MAPPED, "grad_norm", "dead_frac", "lr", "epoch", "attempt", "seed"}
        assert all(isinstance(result[k], float) for k in MAPPED)
        assert result["grad_norm"] == pytest.approx(
            sum(steps.norms[result["epoch"]]) / len(steps.norms[result["epoch"]])
        )
        assert result["grad_norm"] > 0 and 0.0 <= result["dead_frac"] <= 1.0
        assert result["lr"] == 1e-3 and (result["attempt"], result["seed"]) == (0, 7)
    assert run.results[-1]["val_acc"] > 0.5
    assert len({r["train_loss"] for r in run.results}) == 3  # this epoch's mean, not the last one's
    assert trainer.callback_metrics["train_loss"].item() == pytest.approx(run.results[-1]["train_loss"])
    assert sorted(run.checkpoints) == [2, 3]  # every 2nd epoch and the last
    assert sorted(os.listdir(run.checkpoints[2])) == [CHECKPOINT_FILE, LIGHTNING_CKPT]
    assert trainer.lightning_module._forward_hooks == {}  # unwatched when fit ends


def test_without_a_mapping_every_logged_scalar_is_reported_under_its_own_name(tmp_path):
    run = TrialSink(tmp_path)
    _fit(ConvergenceCallback(trial=_trial(run, epochs=1)), max_epochs=1)
    assert {"val_acc", "val_loss", "train_loss"} <= set(run.results[0])


def test_a_mapped_metric_never_logged_is_one_error_naming_it_and_the_logged_ones(tmp_path):
    run = TrialSink(tmp_path)
    callback = ConvergenceCallback({"val_mae": "val/mae", "val_acc": "val_acc"}, trial=_trial(run))
    with pytest.raises(ValueError) as error:
        _fit(callback)
    message = str(error.value)
    assert "'val/mae' not logged (logged: train_loss, val_acc, val_loss)" in message
    assert "\n" not in message and run.results == []


def test_without_a_trial_fitting_fails_at_once_and_inside_one_it_reports_to_it(tmp_path):
    with pytest.raises(RuntimeError, match="no orchestrator trial in this process; run the training through"):
        _fit(ConvergenceCallback(MAPPED), max_epochs=1)
    run = TrialSink(tmp_path)
    with active(_trial(run, epochs=1)):
        _fit(ConvergenceCallback(MAPPED), max_epochs=1)
    assert [r["epoch"] for r in run.results] == [1]


def test_the_trials_budget_wins_over_the_trainers_max_epochs(tmp_path):
    run = TrialSink(tmp_path)
    trainer = _fit(ConvergenceCallback(MAPPED, trial=_trial(run, epochs=2)), max_epochs=7)
    assert [r["epoch"] for r in run.results] == [1, 2] and trainer.current_epoch == 2
    assert sorted(run.checkpoints) == [2]


def test_a_validation_skipped_on_some_epochs_is_refused(tmp_path):
    callback = ConvergenceCallback(MAPPED, trial=_trial(TrialSink(tmp_path)))
    with pytest.raises(ValueError, match="check_val_every_n_epoch=2"):
        _fit(callback, check_val_every_n_epoch=2)


def test_the_same_attempt_resumes_from_its_lightning_checkpoint(tmp_path):
    first = TrialSink(tmp_path / "first")
    _fit(ConvergenceCallback(MAPPED, trial=_trial(first, epochs=4)), max_epochs=4)
    second, steps = TrialSink(tmp_path / "second"), Steps()
    callback = ConvergenceCallback(MAPPED, trial=_trial(second, epochs=4, source=_from(first.checkpoints[2])))
    assert callback.ckpt_path is not None and callback.ckpt_path.endswith(LIGHTNING_CKPT)
    trainer = _fit(callback, max_epochs=4, extra=[steps], ckpt_path=callback.ckpt_path)
    assert [(r["epoch"], r.get("replayed", False)) for r in second.results] == [
        (2, True),
        (3, False),
        (4, False),
    ]
    assert second.results[0] == {**first.results[1], "replayed": True}
    saved = torch.load(os.path.join(first.checkpoints[2], CHECKPOINT_FILE), weights_only=True)["state"][
        "model"
    ]
    assert saved.keys() == steps.start_state.keys()
    assert all(torch.equal(saved[k], steps.start_state[k]) for k in saved)  # the epoch-2 weights
    assert steps.start_step == 2 * len(loaders()[0])  # the optimizer's steps too
    assert trainer.current_epoch == 4 and sorted(second.checkpoints) == [4]


def test_an_older_attempts_checkpoint_is_refused_and_the_attempt_starts_over(tmp_path):
    first = TrialSink(tmp_path / "first")
    _fit(ConvergenceCallback(MAPPED, trial=_trial(first, epochs=2)), max_epochs=2)
    second = TrialSink(tmp_path / "second")
    trial = _trial(second, epochs=2, attempt=1, seed=8, source=_from(first.checkpoints[2]))
    callback = ConvergenceCallback(MAPPED, trial=trial)
    assert callback.ckpt_path is None and trial.restored_files == {}
    _fit(callback, max_epochs=2, ckpt_path=callback.ckpt_path)
    assert [(r["epoch"], r["attempt"], "replayed" in r) for r in second.results] == [
        (1, 1, False),
        (2, 1, False),
    ]


def test_a_checkpoint_without_the_lightning_file_cannot_resume_a_trainer(tmp_path):
    run = TrialSink(tmp_path)
    trial = _trial(run, epochs=1)
    trial.report(1, checkpoint={"w": torch.ones(2)}, val_loss=1.0)
    with pytest.raises(ValueError, match="the checkpoint of epoch 1 has no lightning.ckpt"):
        resume_path(_trial(TrialSink(tmp_path / "again"), epochs=1, source=_from(run.checkpoints[1])))


def test_checkpoint_files_need_plain_names(tmp_path):
    trial = _trial(TrialSink(tmp_path), epochs=1)
    for name in (CHECKPOINT_FILE, "../x", "a/b", ""):
        with pytest.raises(ValueError, match="plain name"):
            trial.report(1, files={name: lambda path: None}, val_loss=1.0)


@pytest.mark.slow
def test_the_lightning_example_sweeps_through_the_command_line(tmp_path):
    """The example's sweep with 2 trials of 3 epochs: exit 0, the summary, MLflow's child runs."""
    import mlflow

    db = tmp_path / "mlflow.db"
    env = cli_env(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = run_cli(
        EXAMPLE,
        "--config-dir",
        "./hpo",
        "experiment=lightning_digits",
        "num_samples=2",
        "max_concurrent_trials=2",
        "trainable.epochs=3",
        "search=random",
        f"storage.path={tmp_path / 'results'}",
        f"tracking.uri=sqlite:///{db}",
        "report=false",
        env=env,
        timeout=240,
    )
    assert "sweep 'lightning_digits' finished in" in out and "2 trials" in out
    assert "best val_acc (max):" in out
    assert "best model: models:/" in out  # the LightningModule logged through trainable.model_fn
    client = mlflow.tracking.MlflowClient(f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "lightning_digits"]
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert {"grad_norm", "dead_frac", "lr", "train_loss"} <= set(child.data.metrics)
