"""The Trial API a train function gets, the train function's name, a metric's direction: in
this process, with real PyTorch models and real checkpoint files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TrialSink
from torch import nn

from orchestrator.contract import mode_of
from orchestrator.errors import ConfigError
from orchestrator.target import check_target, load_target, split_target
from orchestrator.trial import Trial, active, current


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _epoch(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    model.train()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y)


def _trial(sink: TrialSink, attempt: int = 0, seed: int = 5, **kw) -> Trial:
    return Trial(seed=seed, attempt=attempt, epochs=4, hp={"lr": 0.1}, sink=sink, source=sink.source, **kw)


def test_report_fills_in_what_the_framework_measures(tmp_path):
    sink = TrialSink(tmp_path)
    trial = _trial(sink)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trial.watch(model, opt)
    val = _epoch(model, opt)
    trial.report(1, val_loss=val, val_mae=np.float32(2.5), note="text")
    (result,) = sink.results
    assert result["val_loss"] == pytest.approx(float(val)) and isinstance(result["val_loss"], float)
    assert result["val_mae"] == 2.5 and result["note"] == "text"
    assert (result["epoch"], result["attempt"], result["seed"], result["lr"]) == (1, 0, 5, 0.1)
    assert result["grad_norm"] > 0 and 0.0 <= result["dead_frac"] <= 1.0
    trial.report(2, val_loss=1.0, lr=0.5)  # the user's own value wins; nothing measured: left out
    assert sink.results[1]["lr"] == 0.5 and "grad_norm" not in sink.results[1]


def test_checkpoints_follow_checkpoint_every_and_the_last_epoch(tmp_path):
    sink = TrialSink(tmp_path)
    trial = _trial(sink, checkpoint_every=3)
    model = _net()
    for epoch in range(1, 5):
        trial.report(epoch, val_loss=1.0, checkpoint={"model": model})
    assert sorted(sink.checkpoints) == [3, 4]  # every 3rd epoch and the last (the budget)
    state = torch.load(Path(sink.checkpoints[4]) / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["attempt"], state["seed"]) == (4, 0, 5)


def test_a_trial_also_checkpoints_where_the_scheduler_may_pause_it(tmp_path):
    """``checkpoint_at`` (the rungs, from ``scheduler.pause_epochs``): a trial paused there resumes
    at the next epoch, not from an older checkpoint."""
    from orchestrator.policy import ConvergenceSettings

    rungs = ConvergenceSettings().pause_epochs(4)
    assert rungs == [1, 3] and ConvergenceSettings(pause=False).pause_epochs(4) == []
    sink = TrialSink(tmp_path)
    trial = _trial(sink, checkpoint_every=5, checkpoint_at=rungs)
    for epoch in range(1, 5):
        trial.report(epoch, val_loss=1.0, checkpoint={"model": _net()})
    assert sorted(sink.checkpoints) == [1, 3, 4]


def test_restore_continues_this_attempt_and_refuses_an_older_one(tmp_path):
    sink = TrialSink(tmp_path)
    first = _trial(sink)
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first.watch(model, opt)
    for epoch in (1, 2):
        _epoch(model, opt)
        first.report(
            epoch, val_loss=1.0 / epoch, checkpoint={"model": model, "optimizer": opt, "step": epoch}
        )
    again = _trial(sink)
    fresh, fresh_opt = _net(), torch.optim.Adam(_net().parameters(), lr=0.01)
    assert again.restore(model=fresh, optimizer=None) == 2
    assert again.restored["step"] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    assert sink.results[-1]["replayed"] is True and sink.results[-1]["epoch"] == 2
    with pytest.raises(ValueError, match="checkpoint: has no 'scheduler'"):
        _trial(sink).restore(scheduler=torch.optim.lr_scheduler.StepLR(fresh_opt, 1))
    restarted = _trial(sink, attempt=1, seed=9)
    assert restarted.restore(model=_net()) == 0  # an older attempt's weights never come back


def test_a_checkpoint_value_that_cannot_load_safely_is_refused(tmp_path):
    trial = _trial(TrialSink(tmp_path), checkpoint_every=1)
    with pytest.raises(TypeError, match=r"checkpoint: 'data' \(object\) cannot be saved"):
        trial.report(1, val_loss=1.0, checkpoint={"data": object()})


def test_the_running_trial_is_current_and_unwatched_after(tmp_path):
    trial = _trial(TrialSink(tmp_path))
    model = _net()
    with active(trial):
        assert current() is trial
        trial.watch(model)
    assert current() is None
    model.eval()
    model(torch.randn(2, 4))
    trial.report(1, val_loss=1.0)
    assert "dead_frac" not in trial.last  # the hooks went with the function


def test_a_train_function_is_named_and_found_without_running_it(tmp_path):
    pkg = tmp_path / "namedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(
        "from functools import partial as bound\nRAN = []\n"
        "def fit(hp, trial, scale=1):\n    return scale\nalias = fit\nRAN.append(1)\n"
    )
    assert split_target("namedpkg.train:fit") == ("namedpkg.train", "fit")
    for name in ("fit", "alias", "bound"):
        check_target(f"namedpkg.train:{name}", str(tmp_path))
    with pytest.raises(ConfigError, match="defines no 'train'"):
        check_target("namedpkg.train:train", str(tmp_path))
    with pytest.raises(ConfigError, match="must be module:function"):
        split_target("namedpkg/train.py")
    fn = load_target({"_target_": "namedpkg.train.fit", "_partial_": True, "scale": 3}, str(tmp_path))
    assert fn({}, None) == 3


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("val_acc", "max"),
        ("accuracy", "max"),
        ("val_f1", "max"),
        ("auc", "max"),
        ("r2", "max"),
        ("val_loss", "min"),
        ("val_mse", "min"),
        ("val_mae", "min"),
        ("test_error", "min"),
        ("score", None),
    ],
)
def test_a_metrics_name_says_its_direction(metric, mode):
    assert mode_of(metric) == mode
