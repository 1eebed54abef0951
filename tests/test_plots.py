"""Learning-curve figures and the curve record they draw from."""

import math

from analysis.curves import AttemptCurve
from analysis.plots import close, plot_trial


def test_attempt_curve_pads_missing_values_with_nan():
    curve = AttemptCurve(0, seed=3)
    curve.add(1, {"val_acc": 0.5})
    curve.add(2, {"val_acc": 0.6, "val_loss": 1.0})
    assert curve.epochs == [1, 2]
    assert curve.series["val_acc"] == [0.5, 0.6]
    assert math.isnan(curve.series["val_loss"][0]) and curve.series["val_loss"][1] == 1.0


def test_plot_has_one_line_per_attempt_and_marks_the_decision(tmp_path):
    first, second = AttemptCurve(0, seed=1), AttemptCurve(1, seed=2)
    for epoch in range(1, 6):
        first.add(epoch, {"val_acc": 0.1, "val_loss": 2.3})
        second.add(
            epoch, {"val_acc": 0.5 + 0.1 * epoch, "val_loss": float("nan") if epoch == 2 else 1.0 / epoch}
        )
    fig = plot_trial(
        "trial_0001",
        [first, second],
        decision={"action": "stop", "verdict": "converged", "reason": "converged at epoch 4", "step": 4},
    )
    acc_axes, loss_axes = fig.axes
    assert len(acc_axes.get_lines()) == 2 and len(loss_axes.get_lines()) == 2
    labels = [t.get_text() for t in acc_axes.get_legend().get_texts()]
    assert labels == ["attempt 0, seed 1", "attempt 1, seed 2", "converged at epoch 4"]
    assert "stop: converged at epoch 4" in fig._suptitle.get_text()
    path = tmp_path / "curve.png"
    fig.savefig(path)
    close(fig)
    assert path.stat().st_size > 10_000
