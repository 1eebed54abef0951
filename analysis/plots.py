"""Learning-curve plots (matplotlib, headless): one figure per trial, every attempt drawn.

Used at the end of a sweep for the per-trial MLflow artifact, and by the offline reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are only saved
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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
    # fixed margins: tight_layout would cost ~75 ms a trial, as much as the PNG itself
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.14, top=0.82, wspace=0.22)
    return fig


def close(fig: Figure) -> None:
    """Free a figure's memory."""
    plt.close(fig)


#: Colour of each final status in the sweep plots.
STATUS_COLOURS = {
    "CONVERGED": "tab:green",
    "COMPLETED": "tab:blue",
    "PRUNED": "tab:orange",
    "STOPPED_EARLY": "tab:purple",
    "ERROR": "tab:red",
    "INTERRUPTED": "tab:gray",
}


def _events(sweep: Any) -> list[tuple[float, int, float]]:
    """Every epoch of the sweep as (wall time, trial index, metric value), in time order."""
    out = []
    for i, trial in enumerate(sweep.trials):
        for curve in trial.attempts:
            times = curve.series.get("time") or [float("nan")] * len(curve.epochs)
            values = curve.series.get(sweep.metric) or [float("nan")] * len(curve.epochs)
            out += [(t, i, v) for t, v in zip(times, values, strict=True)]
    return sorted(out, key=lambda e: (e[0] if e[0] == e[0] else float("inf"), e[1]))


def plot_anytime(sweep: Any) -> Figure:
    """Best-so-far metric against epochs spent by the whole sweep (epochs in wall-clock order)."""
    sign = sweep.sign
    xs, ys, best = [], [], None
    for n, (_, _, value) in enumerate(_events(sweep), start=1):
        if value == value and (best is None or (value - best) * sign > 0):
            best = value
        xs.append(n)
        ys.append(best if best is not None else float("nan"))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.step(xs, ys, where="post", color="tab:blue")
    budget = sum(t.budget for t in sweep.trials)
    ax.axvline(len(xs), color="gray", ls="--", lw=1, label=f"epochs run: {len(xs)} of {budget} budgeted")
    ax.set_xlabel("epochs spent by the sweep")
    ax.set_ylabel(f"best {sweep.metric} so far")
    ax.set_title(f"{sweep.name}: anytime performance", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right" if sign > 0 else "upper right")
    fig.tight_layout()
    return fig


#: A curve with this many finite points or fewer is drawn with a marker on each.
SHORT_CURVE = 3


def _marks(values: Sequence[float], short: int = SHORT_CURVE) -> list[int]:
    """The points of a curve to mark, as a line alone would not show them: every finite point
    of a short curve (a one-epoch curve is no line at all), and elsewhere any finite point with
    no finite neighbour (NaN leaves gaps)."""
    finite = [math.isfinite(v) for v in values]
    if sum(finite) <= short:
        return [i for i, ok in enumerate(finite) if ok]
    n = len(finite)
    return [
        i
        for i, ok in enumerate(finite)
        if ok and not (i > 0 and finite[i - 1]) and not (i + 1 < n and finite[i + 1])
    ]


def verdict_colours(verdicts: Sequence[str]) -> dict[str, Any]:
    """A colour per verdict: its final status's colour (:data:`STATUS_COLOURS`, as the timeline
    draws it), a darker shade of it for each further verdict of the same status
    (``PRUNED (diverged)`` beside ``PRUNED (rank rule)``)."""
    colours: dict[str, Any] = {}
    shades: dict[str, int] = {}
    for verdict in sorted(set(verdicts)):
        status = verdict.split(" ")[0]
        k = shades[status] = shades.get(status, -1) + 1
        base = to_rgb(STATUS_COLOURS.get(status, "black"))
        colours[verdict] = tuple(c * (1.0 - 0.3 * min(k, 3)) for c in base)
    return colours


def plot_curves(
    sweep: Any, convergence: Sequence[int | None], verdicts: Sequence[str] | None = None
) -> Figure:
    """Every attempt's metric curve coloured by its trial's verdict; convergence points marked.

    A short curve (a trial pruned after an epoch or two) is drawn with markers (:func:`_marks`),
    so every trial shows.

    ``convergence[i]`` is trial i's convergence epoch (on its last attempt), or None when it did
    not converge; ``verdicts[i]`` its decision and verdict (e.g. ``PRUNED (diverged)``), by
    default its final status.
    """
    verdicts = list(verdicts) if verdicts is not None else [t.status for t in sweep.trials]
    colours = verdict_colours(verdicts)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    seen: set[str] = set()
    for trial, conv, verdict in zip(sweep.trials, convergence, verdicts, strict=True):
        colour = colours[verdict]
        for curve in trial.attempts:
            values = curve.series.get(sweep.metric)
            if not values:
                continue
            last = curve is trial.attempts[-1]
            label = verdict if last and verdict not in seen else None  # the legend shows a solid line
            if last:
                seen.add(verdict)
            marks = _marks(values)
            ax.plot(curve.epochs, values, color=colour, alpha=0.7 if last else 0.35, lw=1,
                    ls="-" if last else ":", label=label, marker="o" if marks else None,
                    markevery=marks or None, markersize=4)  # fmt: skip
        if conv is not None and trial.attempts:
            last = trial.attempts[-1]
            if conv in last.epochs:
                y = last.series[sweep.metric][last.epochs.index(conv)]
                ax.scatter([conv], [y], s=18, color=colour, edgecolors="black", linewidths=0.5, zorder=3)
    ax.scatter([], [], s=18, color="white", edgecolors="black", label="convergence epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    ax.set_xlabel("epoch (within its attempt; dotted: an attempt that was restarted)")
    ax.set_ylabel(sweep.metric)
    ax.set_title(f"{sweep.name}: learning curves by verdict", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_timeline(sweep: Any) -> Figure:
    """One bar per trial from its first to its last epoch in wall-clock time, coloured by final
    status; a tick where a restart began."""
    starts = []
    for trial in sweep.trials:
        first = trial.attempts[0]
        times = first.series.get("time") or [float("nan")]
        dt = (first.series.get("time_this_iter_s") or [0.0])[0]
        starts.append(times[0] - (dt if dt == dt else 0.0))
    t0 = min((s for s in starts if s == s), default=0.0)
    height = max(2.5, 0.22 * len(sweep.trials) + 1)
    fig, ax = plt.subplots(figsize=(8, min(height, 30)))
    for row, (trial, start) in enumerate(zip(sweep.trials, starts, strict=True)):
        end_times = trial.attempts[-1].series.get("time") or [float("nan")]
        end = end_times[-1]
        if start != start or end != end:
            continue
        colour = STATUS_COLOURS.get(trial.status, "black")
        ax.barh(row, max(end - start, 0.3), left=start - t0, color=colour, height=0.7)
        for curve in trial.attempts[1:]:
            t = (curve.series.get("time") or [float("nan")])[0]
            if t == t:
                ax.plot([t - t0, t - t0], [row - 0.4, row + 0.4], color="black", lw=1.5)
    handles = [
        Patch(color=c, label=s) for s, c in STATUS_COLOURS.items() if any(t.status == s for t in sweep.trials)
    ]
    ax.set_yticks(range(len(sweep.trials)))
    ax.set_yticklabels([t.name[:18] for t in sweep.trials], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first trial started (black tick: a restart)")
    ax.set_title(f"{sweep.name}: decision timeline", fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    return fig
