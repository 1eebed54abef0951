"""Learning-curve figures and the curve record they draw from."""

import math
from types import SimpleNamespace

from analysis.curves import AttemptCurve
from analysis.plots import _marks, close, plot_curves, plot_trial


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


def _trial(name, status, values):
    curve = AttemptCurve(0, seed=1)
    for epoch, value in enumerate(values, start=1):
        curve.add(epoch, {"val_acc": value})
    return SimpleNamespace(name=name, status=status, attempts=[curve])


def test_a_trial_pruned_after_one_epoch_is_drawn_with_a_marker():
    long = _trial("trial_0000", "CONVERGED", [0.5, 0.7, 0.8, 0.85, 0.86, 0.86])
    one = _trial("trial_0001", "PRUNED", [0.3])
    gap = _trial("trial_0002", "COMPLETED", [0.4, math.nan, 0.6, 0.65, 0.7, 0.72])
    sweep = SimpleNamespace(name="sweep", metric="val_acc", trials=[long, one, gap])
    fig = plot_curves(sweep, [5, None, None], ["CONVERGED", "PRUNED (rank rule)", "COMPLETED"])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    pruned = lines["PRUNED (rank rule)"]
    assert list(pruned.get_xdata()) == [1] and list(pruned.get_ydata()) == [0.3]
    assert pruned.get_marker() == "o" and pruned.get_markevery() == [0]
    assert lines["CONVERGED"].get_marker() in ("None", None, "")  # a long curve is a plain line
    assert lines["COMPLETED"].get_markevery() == [0]  # a point cut off by a gap is marked
    close(fig)


def test_marks_cover_short_curves_and_isolated_points():
    assert _marks([0.1]) == [0] and _marks([0.1, math.nan, 0.3]) == [0, 2]
    assert _marks([math.nan, math.nan]) == [] and _marks([0.1, 0.2, 0.3, 0.4]) == []
    assert _marks([0.1, 0.2, math.nan, 0.4, math.nan, 0.5, 0.6]) == [3]
