"""Learning-curve plots (matplotlib, headless): one figure per trial, every attempt drawn.

Used at the end of a sweep for the per-trial MLflow artifact, and by the offline reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are only saved
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.curves import AttemptCurve  # noqa: E402


def plot_trial(
    title: str,
    attempts: Sequence[AttemptCurve],
    *,
    metric: str = "val_acc",
    loss: str = "val_loss",
    decision: Mapping[str, Any] | None = None,
) -> Figure:
    """Metric and loss against epoch, one line per attempt, the decision marked.

    ``decision`` may hold ``action``, ``verdict``, ``reason`` and ``step``: the epoch of the
    verdict (e.g. the convergence epoch) is marked on the last attempt's curve and the reason
    is written under the title. Non-finite values leave gaps.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, (metric, loss), strict=True):
        for curve in attempts:
            values = curve.series.get(key)
            if not values:
                continue
            seed = f", seed {curve.seed}" if curve.seed is not None else ""
            ax.plot(curve.epochs, values, marker=".", label=f"attempt {curve.attempt}{seed}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if decision and attempts and decision.get("step") is not None:
        last = attempts[-1]
        step = int(decision["step"])
        if step in last.epochs and last.series.get(metric):
            y = last.series[metric][last.epochs.index(step)]
            axes[0].scatter(
                [step],
                [y],
                s=80,
                facecolors="none",
                edgecolors="red",
                zorder=3,
                label=f"{decision.get('verdict', '')} at epoch {step}",
            )
    axes[0].legend(fontsize=7, loc="best")
    subtitle = ""
    if decision:
        subtitle = f"\n{decision.get('action', '')}: {decision.get('reason', '')}"[:160]
    fig.suptitle(f"{title}{subtitle}", fontsize=9)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    """Free a figure's memory."""
    plt.close(fig)
