"""Train the prior from earlier sweeps on the curve banks, and measure it leave-one-bank-out.

Usage::

    python -m benchmarks.train_prior [--out orchestrator/policy/shipped_prior.json] [--auc]

``--out`` writes the prior learned on every bank under ``benchmarks/curves/`` (what
``scheduler.prior=shipped`` reads; this command rebuilds it). ``--auc`` prints, per bank and
epoch 1-3, the AUC of the prior learned on the *other* banks (the bank is never in its own
prior) and of the raw value, for "final in the bank's top 10%" (:data:`orchestrator.policy.prior.TOP`);
with ``--family``, learned on the other banks of the bank's own model family only (:func:`family`:
the LCBench banks, or this project's MLP banks), as a user's MLflow history of one model family
would be. :func:`prior_without` is what the replay's ``convergence_prior*`` use.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.bank import Bank, default_bank_paths, load_bank
from orchestrator.policy.prior import PRIOR_EPOCHS, Curve, PriorModel, examples, train_prior
from orchestrator.priors import SHIPPED

EPOCHS = max(PRIOR_EPOCHS)  # the first epochs of a curve the prior reads



def bank_curves(bank: Bank) -> list[Curve]:
    """Every run of ``bank`` as a curve the prior learns from (``val_acc``, higher is better)."""
    return [
        Curve(c.config, run.val_acc[:EPOCHS], [-v for v in run.val_loss[:EPOCHS]], run.final_acc)
        for c in bank.configs
        for run in c.runs
    ]


@functools.lru_cache(maxsize=1)
def _banks() -> tuple[Bank, ...]:
    return tuple(load_bank(p) for p in default_bank_paths())


def family(name: str) -> str:
    """The model family of a bank: ``lcbench`` (LCBench's MLPs, one search space), ``cnn`` (this
    project's CNN: mnist1d_cnn) or ``mlp`` (this project's MLPs: digits, digits_deep_relu,
    mnist1d, spirals)."""
    return "lcbench" if name.startswith("lcbench") else "cnn" if "cnn" in name else "mlp"


@functools.lru_cache(maxsize=32)
def prior_without(excluded: str | None, same_family: bool = False) -> PriorModel | None:
    """The prior learned on every default bank but ``excluded`` (None: all of them); with
    ``same_family``, only on the banks of ``excluded``'s family (None when it has no other: no
    earlier sweep of that family to learn from)."""
    kept = [b for b in _banks() if b.name != excluded]
    if same_family and excluded is not None:
        kept = [b for b in kept if family(b.name) == family(excluded)]
    if not kept:
        return None
    names = ", ".join(b.name for b in kept)
    return train_prior([bank_curves(b) for b in kept], source=f"banks {names}" if excluded else "shipped")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The chance a positive scores above a negative (ties count one half); NaN without both."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def lobo_table(same_family: bool = False) -> dict[str, dict[int, tuple[float, float]]]:
    """Per bank and epoch: (AUC of the prior learned without the bank, AUC of the raw value)."""
    table: dict[str, dict[int, tuple[float, float]]] = {}
    for bank in _banks():
        model, curves = prior_without(bank.name, same_family), bank_curves(bank)
        if model is None:
            continue  # no other bank of its family
        table[bank.name] = {}
        for epoch in PRIOR_EPOCHS:
            x, y = examples(curves, epoch)
            chances = np.array([model.chance(epoch, row) for row in x])
            raw = np.array([c.values[epoch - 1] for c in curves if len(c.values) >= epoch])
            table[bank.name][epoch] = (auc(chances, y), auc(raw, y))
    return table


def format_lobo(table: dict[str, dict[int, tuple[float, float]]]) -> str:
    """The table as Markdown: prior (raw value) per epoch."""
    head = "| bank | " + " | ".join(f"epoch {e}: prior (raw)" for e in PRIOR_EPOCHS) + " |"
    lines = [head, "|---" * (len(PRIOR_EPOCHS) + 1) + "|"]
    for name, row in table.items():
        cells = " | ".join(f"{p:.2f} ({r:.2f})" for p, r in row.values())
        lines.append(f"| {name} | {cells} |")
    means = [np.nanmean([row[e][i] for row in table.values()]) for e in PRIOR_EPOCHS for i in (0, 1)]
    lines.append(
        "| mean | " + " | ".join(f"{means[2 * i]:.3f} ({means[2 * i + 1]:.3f})" for i in range(3)) + " |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the shipped prior and/or print the leave-one-bank-out AUC table."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_prior", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, help=f"write the prior learned on every bank here ({SHIPPED})")
    parser.add_argument("--auc", action="store_true", help="print the leave-one-bank-out AUC table")
    parser.add_argument("--family", action="store_true", help="--auc: learn from the bank's family only")
    args = parser.parse_args(argv)
    if args.out is None and not args.auc:
        parser.error("nothing to do: give --out and/or --auc")
    if args.out is not None:
        shipped = prior_without(None)
        assert shipped is not None  # every default bank
        args.out.write_text(json.dumps(shipped.to_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    if args.auc:
        print(format_lobo(lobo_table(args.family)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
