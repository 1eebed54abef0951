"""Load a curve bank (``*.jsonl.gz``, format in ``benchmarks/curves/README.md``) into replayable runs.

NaN policy, applied once here so that every scheduler sees the same numbers:

- A ``null`` loss, gradient norm or dead fraction becomes ``nan`` (a whole ``null`` key: all ``nan``).
- A ``null`` validation accuracy repeats the run's last finite ``val_acc`` (carried forward); before
  the first finite value it is the bank's *floor*: the lowest finite ``val_acc`` anywhere in the
  bank (0.0 if none). The recorder writes the accuracy of the epoch whose loss went non-finite,
  and a network with non-finite outputs predicts one class, so that last value is about chance
  level and stays there. ``val_acc`` is therefore always finite, which keeps Ray's and Optuna's
  rules (some of which mishandle ``nan``) comparable.
- A run shorter than its ``epochs`` (``stopped_on_nonfinite``) is padded to ``epochs``: the
  missing tail has ``nan`` losses and diagnostics, ``val_acc`` carried forward as above, and
  costs the mean of the run's finite epoch times each (1 when it has none), as if training had
  gone on diverged.
- A ``null`` (or negative) epoch time costs 1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.curvebank import read_records

CURVES_DIR = Path(__file__).resolve().parent / "curves"
OPTIONAL_LISTS = ("train_loss", "val_loss", "grad_norm", "dead_frac", "epoch_time")
NAN = float("nan")
CHANCE_SHARE = 0.05


@dataclass(frozen=True)
class Run:
    """One recorded training run, padded to its budget; every list has ``budget`` floats."""

    seed: int
    budget: int
    val_acc: tuple[float, ...]
    val_loss: tuple[float, ...]
    train_loss: tuple[float, ...]
    grad_norm: tuple[float, ...]
    dead_frac: tuple[float, ...]
    epoch_time: tuple[float, ...]

    @property
    def final_acc(self) -> float:
        """Return the validation accuracy at the run's last budgeted epoch."""
        return self.val_acc[-1]


@dataclass(frozen=True)
class ConfigCurves:
    """All recorded seeds of one configuration, sorted by seed; ``runs[0]`` is the seed-0 run."""

    config_id: str
    config: dict[str, Any]
    runs: tuple[Run, ...]

    def run_for_attempt(self, attempt: int) -> Run:
        """Return the run that attempt ``attempt`` replays: the ``attempt % n_seeds``-th seed."""
        return self.runs[attempt % len(self.runs)]

    @property
    def lr(self) -> float:
        """Return the learning rate of the configuration (``lr`` or ``learning_rate``), else nan."""
        for key in ("lr", "learning_rate"):
            value = self.config.get(key)
            if isinstance(value, (int, float)):
                return float(value)
        return NAN


@dataclass(frozen=True)
class Bank:
    """A loaded curve bank.

    Attributes:
        name: File name without ``.jsonl.gz``.
        path: Where it was read from.
        configs: One entry per configuration, in file order.
        max_epochs: The largest budget of any run (``max_t`` for the schedulers).
        floor_acc: The lowest finite ``val_acc`` in the bank (fill before a run's first finite one).
        chance_hint: A chance-level estimate for schedulers that want one, or ``None``: the most
            common ``val_acc`` (rounded to 0.001) when it makes up at least ``CHANCE_SHARE`` of all
            recorded values -- the level that many stuck runs share (digits: 0.100, 10 classes);
            ``None`` when no value is that common (the smooth LCBench surrogate curves).
        target: The best final ``val_acc`` over all configurations' seed-0 runs.
        best_index: Index in ``configs`` of the configuration achieving ``target``.
    """

    name: str
    path: Path
    configs: tuple[ConfigCurves, ...]
    max_epochs: int
    floor_acc: float
    chance_hint: float | None
    target: float
    best_index: int

    @property
    def n_seeds_max(self) -> int:
        """Return the most seeds any configuration has."""
        return max(len(c.runs) for c in self.configs)


def bank_name(path: Path) -> str:
    """Return the bank's name: its file name without the ``.jsonl.gz`` suffix."""
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def default_bank_paths(root: Path = CURVES_DIR) -> list[Path]:
    """Return every ``*.jsonl.gz`` file under ``root`` (recursive), sorted by path."""
    return sorted(root.rglob("*.jsonl.gz"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _floor_acc(records: Iterable[dict[str, Any]]) -> float:
    values = [v for r in records for v in (r["val_acc"] or []) if _finite(v)]
    return float(min(values)) if values else 0.0


def _chance_hint(records: Iterable[dict[str, Any]]) -> float | None:
    counts = Counter(round(v, 3) for r in records for v in (r["val_acc"] or []) if _finite(v))
    if not counts:
        return None
    value, count = counts.most_common(1)[0]
    return float(value) if count >= CHANCE_SHARE * sum(counts.values()) else None


def _carried(values: Sequence[Any] | None, budget: int, fallback: float) -> tuple[float, ...]:
    """Return ``budget`` accuracies: a non-finite value or the missing tail repeats the last finite one."""
    out, last = [], fallback
    for value in list(values or [])[:budget]:
        last = float(value) if _finite(value) else last
        out.append(last)
    return tuple(out + [last] * (budget - len(out)))


def _padded(values: Sequence[Any] | None, budget: int, fill: float) -> tuple[float, ...]:
    """Return ``budget`` floats: finite values kept, ``null``/non-finite and the missing tail -> fill."""
    values = list(values or [])[:budget]
    out = [float(v) if _finite(v) else fill for v in values]
    return tuple(out + [fill] * (budget - len(out)))


def _epoch_times(values: Sequence[Any] | None, budget: int) -> tuple[float, ...]:
    """Return ``budget`` epoch costs: recorded seconds, 1 for ``null``, the run's mean for the tail."""
    values = list(values or [])[:budget]
    finite = [float(v) for v in values if _finite(v) and v >= 0]
    tail = sum(finite) / len(finite) if finite else 1.0
    out = [float(v) if _finite(v) and v >= 0 else 1.0 for v in values]
    return tuple(out + [tail] * (budget - len(out)))


def make_run(record: dict[str, Any], floor_acc: float) -> Run:
    """Build a padded ``Run`` from one bank record under the module's NaN policy."""
    budget = int(record["epochs"])
    if budget < 1:
        raise ValueError(f"config {record['config_id']!r} seed {record['seed']}: got {budget=}")
    lists = {key: _padded(record.get(key), budget, NAN) for key in ("train_loss", "val_loss", "grad_norm")}
    return Run(
        seed=int(record["seed"]),
        budget=budget,
        val_acc=_carried(record["val_acc"], budget, floor_acc),
        dead_frac=_padded(record.get("dead_frac"), budget, NAN),
        epoch_time=_epoch_times(record.get("epoch_time"), budget),
        **lists,
    )


def load_bank(path: str | Path) -> Bank:
    """Load a bank file; configurations keep file order, seeds are sorted ascending."""
    path = Path(path)
    records = read_records(path)
    floor_acc = _floor_acc(records)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(str(record["config_id"]), []).append(record)
    configs = []
    for config_id, group in grouped.items():
        runs = tuple(sorted((make_run(r, floor_acc) for r in group), key=lambda run: run.seed))
        configs.append(ConfigCurves(config_id=config_id, config=dict(group[0]["config"] or {}), runs=runs))
    finals = [c.runs[0].final_acc for c in configs]
    best_index = max(range(len(configs)), key=finals.__getitem__)
    return Bank(
        name=bank_name(path),
        path=path,
        configs=tuple(configs),
        max_epochs=max(run.budget for c in configs for run in c.runs),
        floor_acc=floor_acc,
        chance_hint=_chance_hint(records),
        target=finals[best_index],
        best_index=best_index,
    )
