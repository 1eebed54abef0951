"""The policy's state as plain, versioned data: JSON-serialisable, never pickled objects.

Version 7 keeps each trial's pauses (``pauses``: :class:`orchestrator.policy.pausing.PauseRecord`
s by trial id, freeze-thaw); version 6 is read with none (no trial was paused). A pause saved
before records held ``settled`` reads as settled (promotable as before).
Version 6 keeps, in each :class:`orchestrator.policy.rungs.AshaRungs` state, every trial's value
per rung by trial key (``values``: the evidence of adaptive rungs); version 5 is read with none
(the rungs' evidence starts again; their cutoffs keep every value recorded).
Version 5 holds the restart record per kind of failure (``restarts``:
:class:`orchestrator.policy.restarts.RestartRecord`); version 4, which counted restarts over
all kinds, is read with an empty record (its restarts' evidence starts again, on trust).
Version 4 adds the metric's measured scale (``scale``: the opening values and the unit,
:class:`orchestrator.policy.scale.MetricScale`); version 3, saved before scales, is read as a
state whose scale has seen nothing yet. Version 3 holds the rank rules' states as a list, in
the order of the policy's ``rules``.
Version 2 (before rules were composed as a list) held them in four named slots: ``inner``
(with its loss guard ``loss_inner``) and ``cost_inner`` (with ``cost_loss_inner``); it is read
by turning the slots that hold a state into that list, in that order, as
:func:`orchestrator.policy.policy_from_settings` orders the rules, then as version 3. Any other
version is refused.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from orchestrator.policy.pausing import PauseRecord
from orchestrator.policy.restarts import RestartRecord
from orchestrator.policy.trial import AttemptRecord, _Trial

if TYPE_CHECKING:
    from orchestrator.policy.engine import ConvergencePolicy

STATE_VERSION = 7
_SERIES = ("loss", "metric", "grad", "dead")
#: Version 2's slots of the rank rules: (rule, its loss guard), in the order of the rules.
_V2_SLOTS = (("inner", "loss_inner"), ("cost_inner", "cost_loss_inner"))


def policy_state(policy: ConvergencePolicy) -> dict[str, Any]:
    """The policy's whole state: the sweep's references, every trial, every rank rule's state."""
    return {
        "version": STATE_VERSION,
        "best": policy.best,
        "leaders": [list(pair) for pair in policy.leaders],
        "epochs": policy.epochs,
        "restart_epochs": policy.restart_epochs,
        "restarts": policy.restarts.state_dict(),
        "trials": {tid: _trial_state(t) for tid, t in policy.trials.items()},
        "rules": [rule.state_dict() for rule in policy.rules],
        "scale": policy.metric_scale.state_dict(),
        "pauses": {tid: [asdict(r) for r in records] for tid, records in policy.pauses.items()},
    }


def load_policy_state(policy: ConvergencePolicy, state: dict[str, Any]) -> None:
    """Restore ``policy`` from :func:`policy_state` (this version or an older one from 2 on).

    Raises:
        ValueError: another version, or states for another number of rank rules than the
            policy's.
    """
    if state.get("version") == 2:
        state = upgrade_v2(state)
    if state.get("version") == 3:
        state = {**state, "version": 4, "scale": {}}
    if state.get("version") == 4:
        state = {**state, "version": 5, "restarts": RestartRecord().state_dict()}
    if state.get("version") == 5:
        state = {**state, "version": 6, "rules": [_rung_values(r) for r in state["rules"]]}
    if state.get("version") == 6:
        state = {**state, "version": STATE_VERSION, "pauses": {}}
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"policy state version {state.get('version')!r} is not {STATE_VERSION}")
    if len(state["rules"]) != len(policy.rules):
        raise ValueError(
            f"policy state holds {len(state['rules'])} rank rule(s), this policy has {len(policy.rules)}"
        )
    policy.best = state["best"]
    policy.leaders = [(float(v), str(t)) for v, t in state["leaders"]]
    policy.epochs = int(state["epochs"])
    policy.restart_epochs = int(state["restart_epochs"])
    policy.restarts.load_state_dict(state["restarts"])
    policy.trials = {tid: _trial_from(data, policy.config.history) for tid, data in state["trials"].items()}
    for rule, rule_state in zip(policy.rules, state["rules"], strict=True):
        rule.load_state_dict(rule_state)
    policy.metric_scale.load_state_dict(state["scale"])
    policy.pauses = {tid: [PauseRecord(**r) for r in records] for tid, records in state["pauses"].items()}
    policy._promotable = (-1, [])


def upgrade_v2(state: dict[str, Any]) -> dict[str, Any]:
    """A version-2 state as version 3: its named rule slots become the list of rule states."""
    rules = []
    for rule, guard in _V2_SLOTS:
        if state.get(rule) is not None:
            guarded = state.get(guard) is not None
            rules.append({"rule": state[rule], "guard": state[guard]} if guarded else state[rule])
    names = {name for slots in _V2_SLOTS for name in slots}
    kept = {k: v for k, v in state.items() if k not in names}
    return {**kept, "version": 3, "rules": rules}


def _rung_values(rule: Any) -> Any:
    """A version-5 rank rule's state with empty ``values`` in each rung state it holds (nested
    in a guarded or compute rule's state)."""
    if not isinstance(rule, dict):
        return rule
    if "recorded" in rule and "values" not in rule:
        return {**rule, "values": {r: {} for r in rule["recorded"]}}
    return {k: _rung_values(v) for k, v in rule.items()}


def _trial_state(trial: _Trial) -> dict[str, Any]:
    return {
        **{name: list(getattr(trial, name)) for name in _SERIES},
        "epoch": trial.epoch,
        "cost": trial.cost,
        "initial_loss": trial.initial_loss,
        "lowest_loss": trial.lowest_loss,
        "peak": trial.peak,
        "params": trial.params,
        "seed_key": trial.seed_key,
        "finished": trial.finished,
        "lineage": [asdict(r) for r in trial.lineage],
    }


def _trial_from(data: dict[str, Any], history: int) -> _Trial:
    trial = _Trial(history)
    for name in _SERIES:
        getattr(trial, name).extend(data[name])
    trial.epoch, trial.initial_loss = data["epoch"], data["initial_loss"]
    trial.cost = float(data.get("cost", 0.0))  # absent in states saved before compute rungs
    trial.lowest_loss, trial.peak = data["lowest_loss"], data["peak"]
    trial.params, trial.finished = dict(data["params"]), bool(data["finished"])
    trial.seed_key = data["seed_key"]
    trial.lineage = [AttemptRecord(**r) for r in data["lineage"]]
    return trial
