"""Which of the policy's rules were active in a sweep, and why the others were off.

Some rules need inputs a trainable may not report (DESIGN.md, metric contract: a missing
optional key turns off the rules that need it): the collapse and chance rules need a chance
level, ``vanishing_grad`` needs ``grad_norm``, ``dead_relu`` needs ``dead_frac``, the compute
rungs need the epoch's seconds (Ray's ``time_this_iter_s``); others are switched off by a
setting. :func:`rule_coverage` says which, from the config, the rank rules and the optional keys
that trials reported; pure and stdlib only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from orchestrator.policy.config import PolicyConfig
from orchestrator.policy.rules import EPOCHS, SECONDS, RankRule

#: The optional result keys some rules need: the diagnostics and the epoch's seconds.
OPTIONAL_KEYS: tuple[str, ...] = ("grad_norm", "dead_frac", "time_this_iter_s")
#: Every rule :func:`rule_coverage` reports on, in the order the policy checks them.
RULE_NAMES: tuple[str, ...] = (
    "divergence",
    "collapse",
    "dead_relu",
    "vanishing_grad",
    "chance",
    "no_progress",
    "predicted_worse",
    "plateau_bad",
    "oscillation",
    "converged",
    "rank",
    "cost_rank",
    "pause",
    "prior",
    "restart",
)


def rule_coverage(
    config: PolicyConfig, rules: Sequence[RankRule], reported: Collection[str], prior: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The rules that were active (in :data:`RULE_NAMES` order) and each other rule's reason.

    ``reported`` holds the optional keys (:data:`OPTIONAL_KEYS`) that at least one trial reported
    as a finite number; ``prior``: the policy has a prior from earlier sweeps. A rule is off for
    the first missing input: no chance level, a key never reported, a setting that turns it
    off, or no rank rule placed on its clock (pausing and the prior act on the epoch rungs).
    """
    off = {name: why for name, why in _reasons(config, rules, reported, prior).items() if why is not None}
    return [name for name in RULE_NAMES if name not in off], off


def _reasons(
    config: PolicyConfig, rules: Sequence[RankRule], reported: Collection[str], prior: bool
) -> dict[str, str | None]:
    """Each rule's reason to be off, None when it is on."""
    no_restart = _no_restart(config)
    no_rank = (
        None if EPOCHS in {rule.clock for rule in rules} else "no rank rule: inner is null, or too few trials"
    )
    no_chance = "no chance level" if config.chance is None else None
    clocks = {rule.clock for rule in rules}
    cost = "cost_rungs is off" if SECONDS not in clocks else None
    if cost is None and "time_this_iter_s" not in reported:
        cost = "no time_this_iter_s reported"
    return {
        "collapse": no_chance or no_restart,
        "dead_relu": None if "dead_frac" in reported else "no dead_frac reported",
        "vanishing_grad": None if "grad_norm" in reported else "no grad_norm reported",
        "chance": no_chance,
        "predicted_worse": None if config.prune_predicted_worse else "prune_predicted_worse is off",
        "converged": None if config.stop_converged else "stop_converged is off",
        "rank": no_rank,
        "cost_rank": cost,
        "pause": ("pause is off" if not config.pause else None) or no_rank,
        "prior": ("scheduler.prior is not set" if not prior else None) or no_rank,
        "restart": no_restart,
    }


def _no_restart(config: PolicyConfig) -> str | None:
    """Why no trial can restart (None: restarts are possible)."""
    if config.max_restarts == 0:
        return "max_restarts is 0"
    if config.restart_budget == 0.0:
        return "restart_budget is 0"
    return None


def coverage_line(active: Sequence[str], off: dict[str, str]) -> str:
    """One line: ``rules: a, b; off: c (why), d (why)`` (``off`` part left out when none is)."""
    line = "rules: " + (", ".join(active) or "none")
    if off:
        line += "; off: " + ", ".join(f"{name} ({why})" for name, why in off.items())
    return line
