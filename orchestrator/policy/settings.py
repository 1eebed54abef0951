"""``scheduler=convergence``'s settings and the policy they build: :func:`policy_from_settings`."""

from __future__ import annotations

from typing import Any

from orchestrator.policy.config import PolicyConfig, thresholds_from
from orchestrator.policy.engine import ConvergencePolicy
from orchestrator.policy.rules import GuardedRule, RankRule
from orchestrator.policy.rungs import AshaRungs, CostRungs

#: Keys of a scheduler config that are not the policy's (the scheduler's name, other rules').
NOT_POLICY_SETTINGS = ("name", "min_samples_required")
#: Keys that place the rank rules; the rest are :class:`PolicyConfig` fields.
RULE_SETTINGS = (
    "inner",
    "grace_period",
    "reduction_factor",
    "loss_guard",
    "cost_rungs",
    "cost_calibration",
    "thresholds",
)
#: The inner rank rules by name.
INNER_RULES = ("asha",)


def policy_from_settings(
    settings: dict[str, Any],
    *,
    mode: str,
    chance: float | None,
    budget: int,
    total_epochs: int | None,
    sweep_seed: int = 0,
) -> ConvergencePolicy:
    """The policy configured by ``settings``, the keys of ``conf/scheduler/convergence.yaml``.

    The product (``orchestrator.scheduling.build_policy``) and the replay benchmark
    (``benchmarks/schedulers.make_convergence``) both build the policy here. Keys: every
    :class:`PolicyConfig` field except ``mode``, ``chance``, ``history``, ``thresholds``;
    ``thresholds`` (threshold name -> value, :func:`thresholds_from`); ``inner`` (``asha`` or
    None) with ``grace_period`` and ``reduction_factor`` placing :class:`AshaRungs` (grace
    capped at ``budget``), used in sweeps of at least ``reduction_factor**2`` trials
    (``total_epochs / budget``; in smaller ones a rung's ranking is noise); ``loss_guard``: each
    rule gets a guard, the same rungs over the loss that spare a trial ranking in its top
    ``1 / reduction_factor**2`` (:class:`GuardedRule`); ``cost_rungs``: a second rule, the same
    rungs over training time (:class:`CostRungs`, its unit the median second epoch of the first
    ``cost_calibration`` trials). A missing key takes the default of :class:`PolicyConfig`
    (rules: no inner rule); ``name`` and other schedulers' keys are ignored; an unknown key is
    a ValueError naming it.
    """
    known = set(PolicyConfig.__dataclass_fields__) - {"mode", "chance", "history", "thresholds"}
    for name in settings:
        if name not in known and name not in RULE_SETTINGS and name not in NOT_POLICY_SETTINGS:
            raise ValueError(f"unknown scheduler setting {name!r} (known: {', '.join(sorted(known))})")
    fields = {k: v for k, v in settings.items() if k in known}
    thresholds = thresholds_from(dict(settings.get("thresholds") or {}))
    config = PolicyConfig(mode=mode, chance=chance, thresholds=thresholds, **fields)
    inner_name = settings.get("inner")
    if inner_name is not None and inner_name not in INNER_RULES:
        raise ValueError(f"inner: must be one of {', '.join(INNER_RULES)} or null, got {inner_name!r}")
    calibration = settings.get("cost_calibration", 4)
    if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1:
        raise ValueError(f"cost_calibration: must be a whole number >= 1, got {calibration!r}")
    rules: list[RankRule] = []
    grace = min(int(settings.get("grace_period", 1)), budget)
    factor = float(settings.get("reduction_factor", 3.0))
    big_enough = total_epochs is None or total_epochs >= factor**2 * budget
    keep = 1.0 / factor**2 if settings.get("loss_guard", False) else None
    if inner_name == "asha" and big_enough:
        rule: RankRule = AshaRungs(grace, factor, budget)
        rules.append(GuardedRule(rule, AshaRungs(grace, factor, budget, keep=keep)) if keep else rule)
        if settings.get("cost_rungs", False):
            rule = CostRungs(grace, factor, budget, calibration=calibration)
            guard = CostRungs(grace, factor, budget, keep=keep, calibration=calibration) if keep else None
            rules.append(GuardedRule(rule, guard) if guard else rule)
    return ConvergencePolicy(
        config, budget=budget, total_epochs=total_epochs, sweep_seed=sweep_seed, rules=rules
    )
