"""``check=true``: run one trial of the sweep for two epochs in this process and say what it
reported, so a user sees in seconds whether their train function fits the metric contract.

No Ray, no MLflow, no checkpoint kept: the trial's function is called as a sweep would call it
(seeded, with a ``Trial``), with each searched hyperparameter at the middle of its range (the
first choice of a ``choice``). Printed: the hyperparameters, every reported key per epoch, the
objective's values, the first contract problem if any, and which convergence rules would be
active. Exit status 0 when the contract holds, 2 when it does not; the function's own
exception propagates with its traceback.
"""

from __future__ import annotations

from typing import Any

from orchestrator.config import SweepConfig
from orchestrator.contract import contract_problem, objectives_problem
from orchestrator.objectives import objectives_of, why_off
from orchestrator.policy import OPTIONAL_KEYS, rule_coverage
from orchestrator.runner import call_function
from orchestrator.scheduling import build_policy, loss_of
from orchestrator.trials import run_settings

CHECK_EPOCHS = 2


def middle_config(cfg: SweepConfig) -> dict[str, Any]:
    """The fixed values and each searched hyperparameter's middle value (first choice)."""
    space = cfg.space
    hp = dict(space.fixed)
    for name, dist in space.searched.items():
        values = dist.grid(3)
        hp[name] = values[0] if dist.type == "choice" else values[len(values) // 2]
    return hp


def run_check(cfg: SweepConfig, launch_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Call the sweep's train function once for ``CHECK_EPOCHS`` epochs; return (hp, results)."""
    epochs = min(CHECK_EPOCHS, cfg.trainable.epochs)
    settings = {**run_settings(cfg, launch_dir), "checkpoint_every": epochs}
    config = {**middle_config(cfg), "epochs": epochs, "attempt": 0, "trial_index": 0, "run": settings}
    results: list[dict[str, Any]] = []
    trial = call_function(
        config, "check", launch_dir, lambda result, _directory: results.append(dict(result))
    )
    return trial.hp, results


def check(cfg: SweepConfig, launch_dir: str) -> int:
    """Run :func:`run_check`, print what the trial reported; 0 when the contract holds, else 2."""
    hp, results = run_check(cfg, launch_dir)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(hp.items()))
    name = cfg.trainable.fn if cfg.trainable.own else f"the built-in {cfg.trainable.model}"
    print(f"check: {name} reported {len(results)} result(s) with {shown}")
    if not results:
        print("problem: the function returned without reporting (call trial.report(epoch, ...))")
        return 2
    keys = sorted({k for r in results for k in r})
    print(f"reported keys: {', '.join(keys)}")
    for r in results:
        print("  " + ", ".join(f"{k}={_short(v)}" for k, v in r.items()))
    for o in objectives_of(cfg) or [cfg]:
        values = ", ".join(_short(r.get(o.metric)) for r in results)
        print(f"objective {o.metric} ({o.mode}): {values}")
    keys = [o.metric for o in objectives_of(cfg)]
    problem = contract_problem(results[0], cfg.metric, loss_of(cfg)) or objectives_problem(results[0], keys)
    if problem is not None:
        print(f"problem: {problem}")
        return 2
    if cfg.scheduler.name == "convergence":
        policy = build_policy(cfg, cfg.num_samples)
        reported = {k for r in results for k in OPTIONAL_KEYS if isinstance(r.get(k), (int, float))}
        reported.add("time_this_iter_s")  # Ray measures it in a sweep
        active_rules, off = rule_coverage(policy.config, policy.rules, reported, policy.prior is not None)
        off = {name: why_off(cfg).get(name, why) for name, why in off.items()}
        print(f"rules: {', '.join(active_rules)}")
        if off:
            print("off: " + "; ".join(f"{name} ({why})" for name, why in off.items()))
    print("ok: the results fit the metric contract")
    return 0


def _short(value: Any) -> str:
    return (
        f"{value:.6g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
    )
