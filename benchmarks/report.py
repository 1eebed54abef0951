"""Plain-text tables of replay summaries: one per bank, ratios against ASHA when it ran.

The ``gap`` column is ``gap_closed``; where ASHA's median repeat never reaches the target it
shows each scheduler's count of repeats reaching it instead (``reached_target``/``repeats``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from benchmarks.metrics import BASELINE, RESCUE_GAP, RESCUE_TOLERANCE, TARGET_TOLERANCE
from benchmarks.oracle import asha_misses_target
from benchmarks.regret import REGRET_POINTS

Summary = Mapping[str, Any]


def _seconds(value: float) -> str:
    """Format simulated seconds: no decimals from 1000 on, one from 10 on, else three."""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


def _interval(value: list[float]) -> str:
    low, high = value
    return f"[{low:.3f},{high:.3f}]"


# (header, summary key, formatter, followed by a ratio-to-asha column)
_COLUMNS: tuple[tuple[str, str, Callable[[float], str], bool], ...] = (
    ("epochs", "epochs", _fixed(0), True),
    ("sim_time", "sim_time", _seconds, True),
    ("best_final", "best_final_acc", _fixed(4), False),
    ("t_target", "compute_to_target", _seconds, True),
    ("ep_target", "epochs_to_target", _fixed(0), False),
    ("reached", "target_reached_frac", _fixed(2), False),
    ("restarts", "restarts", _fixed(1), False),
    ("helped", "restarts_helped", _fixed(2), False),
    ("best_pruned", "best_config_pruned_frac", _fixed(2), False),
    ("regret", "regret_mean", _fixed(3), False),
    ("regret_ci95", "regret_ci", _interval, False),
    ("gap", "gap_closed", _fixed(2), False),
    ("rst_epochs", "restart_epochs_frac", _fixed(3), False),
    ("rescued", "rescued_frac", _fixed(2), False),
)


def _fmt(value: Any, formatter: Callable[[float], str]) -> str:
    return "-" if value is None else formatter(value)


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{value / base:.2f}"


def table_rows(summaries: Mapping[str, Summary]) -> list[list[str]]:
    """Return the header and one row of cells per scheduler, with ``x_asha`` ratio columns."""
    base = summaries.get(BASELINE)
    header = ["scheduler"]
    for title, _, _, with_ratio in _COLUMNS:
        header += [title, "x_asha"] if with_ratio and base is not None else [title]
    rows = [header]
    counts = asha_misses_target(summaries)
    for name, summary in summaries.items():
        row = [name]
        for _, key, formatter, with_ratio in _COLUMNS:
            if key == "gap_closed" and counts:
                row.append(f"{summary['reached_target']}/{summary['repeats']}")
                continue
            row.append(_fmt(summary[key], formatter))
            if with_ratio and base is not None:
                row.append(_ratio(summary[key], base[key]))
        rows.append(row)
    return rows


def format_table(title: str, summaries: Mapping[str, Summary], notes: list[str] | None = None) -> str:
    """Return a titled, right-aligned plain-text table of the summaries, then any notes."""
    rows = table_rows(summaries)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"  note: {note}" for note in notes or []]
    return "\n".join(lines)


LEGEND = f"""\
columns: epochs = epochs trained (mean over repeats); sim_time = simulated makespan with the workers
(recorded epoch seconds, mean); best_final = best val_acc at the full budget (mean); t_target /
ep_target = simulated time / epochs until a trial reports val_acc within {TARGET_TOLERANCE} of the
bank's best seed-0 final (median over repeats, never = inf, '-' if the median is inf); reached =
fraction of repeats reaching it; restarts = restarts per repeat (mean); helped = fraction of
restarts whose new attempt ended above the value at the restart point; best_pruned = fraction of
repeats in which the bank's best configuration was proposed and stopped before its budget;
regret = normalized regret of the best val_acc reported so far (0 = the bank's highest val_acc,
1 = its median seed-0 final), averaged over {REGRET_POINTS} times from 0 to {BASELINE}'s makespan in each
repeat, interquartile mean over repeats; regret_ci95 = its bootstrap 95% interval; gap =
({BASELINE} - t) / ({BASELINE} - oracle) in median t_target (1 = the oracle bound, 0 = {BASELINE}), or,
where {BASELINE}'s median repeat never reaches the target, the repeats reaching it; rst_epochs =
share of epochs trained in restarted attempts; rescued = of the configurations whose seed-0 final
is > {RESCUE_GAP} below their best seed's, the share whose last attempt ended within {RESCUE_TOLERANCE} of it;
x_asha = ratio to {BASELINE}."""
