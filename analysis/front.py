"""The Pareto front of a finished sweep with several objectives: which trials are on it, its
table, and the scatter of the first two objectives with the front drawn over the others.

A trial's point is its final value of each objective (the last epoch of its last attempt, what
Optuna was told); only trials that ended COMPLETE for Optuna (:data:`FRONT_STATUSES`: converged,
ran their budget, stopped early) compete; pruned, failed and interrupted ones, and any with a
non-finite value, are never on the front (:mod:`analysis.pareto`).
"""

from __future__ import annotations

from typing import Any

from analysis.pareto import pareto_mask
from analysis.records import SweepRecord
from analysis.tables import Table

#: Final statuses of trials Optuna holds as COMPLETE (:data:`analysis.records.STATUSES`).
FRONT_STATUSES = ("CONVERGED", "COMPLETED", "STOPPED_EARLY")


def points(sweep: SweepRecord) -> list[list[float | None]]:
    """Each trial's final value of each objective (None: missing or not finite)."""
    return [[t.final(metric) for metric, _ in sweep.objectives] for t in sweep.trials]


def front_mask(sweep: SweepRecord) -> list[bool]:
    """For each trial, whether it is on the sweep's Pareto front (all False for one objective)."""
    if not sweep.objectives:
        return [False] * len(sweep.trials)
    none = [None] * len(sweep.objectives)
    pairs = zip(sweep.trials, points(sweep), strict=True)
    eligible = [p if t.status in FRONT_STATUSES else none for t, p in pairs]
    return pareto_mask(eligible, [mode for _, mode in sweep.objectives])


def front_table(sweep: SweepRecord) -> Table | None:
    """The front's trials with their objective values, best first on the first objective; None
    for one objective."""
    if not sweep.objectives:
        return None
    said = ", ".join(f"{m} {mode}" for m, mode in sweep.objectives)
    on = [i for i, flag in enumerate(front_mask(sweep)) if flag]
    table = Table(
        f"Pareto front ({said}): {len(on)} of {len(sweep.trials)} trials",
        ("trial", *(m for m, _ in sweep.objectives), "status"),
    )
    rows = points(sweep)
    sign = 1.0 if sweep.objectives[0][1] == "max" else -1.0
    for i in sorted(on, key=lambda i: -sign * rows[i][0]):  # type: ignore[operator]
        table.rows.append((sweep.trials[i].name, *rows[i], sweep.trials[i].status))
    return table


def plot_front(sweep: SweepRecord) -> Any:
    """A scatter of the first two objectives: every trial grey, the front's trials highlighted and
    joined in order of the first objective. Needs at least two objectives."""
    from analysis.plots import plt

    (mx, mode_x), (my, mode_y) = sweep.objectives[:2]
    xy = [(p[0], p[1]) for p in points(sweep)]
    mask = front_mask(sweep)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rest = [(x, y) for (x, y), on in zip(xy, mask, strict=True) if not on and x is not None and y is not None]
    front = sorted((x, y) for (x, y), on in zip(xy, mask, strict=True) if on)
    if rest:
        ax.scatter(*zip(*rest, strict=True), c="0.6", s=22, label="dominated or not complete")
    if front:
        ax.plot(*zip(*front, strict=True), "-o", c="tab:red", ms=6, label="Pareto front")
    ax.set_xlabel(f"{mx} ({mode_x})")
    ax.set_ylabel(f"{my} ({mode_y})")
    ax.set_title(f"{sweep.name}: {len(front)} trials on the front of {len(xy)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
