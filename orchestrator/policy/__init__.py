"""The convergence policy: a per-trial state machine that turns verdicts into decisions.

Pure (numpy, stdlib and ``analysis.convergence``): no Ray, torch, MLflow or Hydra, so every
decision can be replayed on recorded curves and reproduced offline. Keyed by ``trial_id``.

Two references, in metric units: the *best final*, the best value of the trials that
finished (completed, or stopped as converged), and the *leader*, the best metric any other
trial has reported so far (at any epoch) or the best final when that is better. Rules,
checked in this order on each epoch of a trial's current attempt (margins in metric units are
in units of the metric's scale, ``PolicyConfig.scale``: given, or measured by ``scale``'s
:class:`MetricScale`; ``thresholds`` are :class:`analysis.convergence.Thresholds`):

1. The curve is diagnosed by :func:`analysis.convergence.diagnose` against the leader.
2. ``diverged`` -> **prune** at once. A restarted attempt no better than the attempt it
   replaced (by more than ``thresholds.chance_margin``) at the epoch where that one ended ->
   **cut** (see *cut* below): the restart did not pay.
3. *Collapsed* -> **restart** from scratch with a new seed (derived from sweep seed, trial and
   attempt): the attempt learned (its best metric beat ``chance`` by more than
   ``collapse_margin``) and then fell back to chance (its last ``thresholds.window`` epochs
   within ``thresholds.chance_margin`` of it): the trajectory failed, not the configuration
   (e.g. ReLUs that died after one bad step). Checked before the rules that would prune it.
   While the latest epoch is back at chance but the window is not yet, the trial
   **continues** (when a restart is still possible): whether a collapse is restarted must
   not depend on which other trials reported first.
4. ``stuck`` -> **restart**; else **prune**.
5. ``predicted_worse`` (even the optimistic end of the curve loses to the leader by more than
   ``thresholds.predict_margin``) -> **cut** (when ``prune_predicted_worse``).
6. ``plateau_bad`` (converged far below the leader: a local minimum) -> **restart**; else
   **stop** (it converged; its value counts).
7. ``oscillating`` -> **restart** with ``lr`` x ``remedy_lr_factor`` when that remedy is on;
   else **prune** when the mean of its last window is below the leader by more than
   ``thresholds.bad_margin``.
8. ``converged`` -> **stop** (when ``stop_converged``), unless the trial is a *contender* (its
   level is within ``contender_margin`` of the best final or above it; before any trial
   finished nothing is) or less than ``stop_min_left`` of its budget is left: those run on to
   the budget, so the sweep's best result is a full-budget one.
9. The rank rules (``rules``, :mod:`orchestrator.policy.rules`; e.g. :class:`AshaRungs`: at a
   rung, below the top share of the values recorded there before it; ``adaptive``: that share
   set by how well the rung's ranks held at the next rung on the sweep's own trials,
   :mod:`orchestrator.policy.evidence`, the reason saying it) may **prune**. Every
   rule of the list judges the trial, on its own clock (epochs, or seconds of training as
   :class:`CostRungs`), and a rule's own guard may spare it (:class:`GuardedRule`: the loss
   ranks near the top of the rung, as a metric that lags its loss often catches up, once the
   rung holds its ``settled`` count of values, ``reduction_factor**2``). Cut by any rule, the
   trial is still spared by its curve: its optimistic end,
   :func:`analysis.convergence.optimistic_final`, could still beat the leader; else it is
   **paused** when it learned (no initialisation failure, better than chance) and is within
   ``pause_margin`` of the rung's cutoff (``pause``; freeze-thaw, :mod:`.pausing`: it resumes
   where it stopped when it would pass its rung now, if it was cut among a settled count of
   values, or when no new configuration is left), else **cut**.
10. Otherwise **continue**.

To **cut** a trial is to prune it, unless its last epoch shows an initialisation failure
(dead units: a dead fraction or gradient norm past its threshold; stuck: its metric not better
than chance by more than ``thresholds.chance_margin``, or NaN) whose kind the evidence lets
restart: then it **restarts** (a rank rule's cut of a trial that learned is no sign of a local
minimum: it is pruned). A restarted attempt is not judged by the rank rules before the epoch
where the attempt it replaced ended.

Every restart of rules 3, 4 and 6 needs the sweep's own evidence for its kind of failure
(collapsed, dead units — dead ReLUs or a vanishing gradient —, otherwise stuck, local minimum:
:mod:`orchestrator.policy.restarts`): the first ``restart_trust`` restarts of a kind happen on
trust, later ones only while at least ``restart_success`` of that kind's finished restarts
ended better than the attempt they replaced (by more than ``thresholds.chance_margin``); the
new attempt's reason names that evidence, a refusal's reason says why. Every restart stays
within ``max_restarts`` per trial and the sweep-wide ``restart_budget`` (share of the sweep's
total epoch budget); without a restart, the rule's other action applies.

NaN policy: a non-finite loss is diagnosed as divergence; a NaN metric never becomes a
leader or a best final and counts as the worst value at a rung.

Modules: ``decision`` (:class:`Decision`, the actions), ``config`` (:class:`PolicyConfig`,
:class:`SettingError`), ``trial`` (what is kept per trial, :class:`AttemptRecord`), ``engine``
(:class:`ConvergencePolicy`), ``rules`` (:class:`RankRule`, :class:`GuardedRule`), ``rungs``
(:class:`AshaRungs`, :class:`CostRungs`), ``pausing`` (freeze-thaw), ``evidence`` (how far a
rung's ranks held, :func:`~orchestrator.policy.evidence.rank_auc`), ``restarts``
(:class:`RestartRecord`), ``state`` (save and restore as versioned data),
``settings`` (:class:`ConvergenceSettings`, :func:`policy_from_settings`), ``scale`` (the
metric's unit, :class:`MetricScale`), ``coverage`` (which rules were active, :func:`rule_coverage`).
"""

from orchestrator.policy.config import PolicyConfig, PolicySettings, SettingError, thresholds_from
from orchestrator.policy.coverage import OPTIONAL_KEYS, RULE_NAMES, coverage_line, rule_coverage
from orchestrator.policy.decision import (
    CONTINUE,
    DECISION_WIDTH,
    PAUSE,
    PRUNE,
    RESTART,
    STOP,
    Decision,
    decision_data,
    decision_from_data,
    decision_outcome,
    decision_text,
)
from orchestrator.policy.engine import INIT_KINDS, ConvergencePolicy
from orchestrator.policy.restarts import KINDS as RESTART_KINDS
from orchestrator.policy.restarts import RestartRecord
from orchestrator.policy.rules import EPOCHS, SECONDS, GuardedRule, RankRule, Reading
from orchestrator.policy.rungs import AshaRungs, CostRungs
from orchestrator.policy.scale import MetricScale
from orchestrator.policy.settings import INNER_RULES, ConvergenceSettings, policy_from_settings
from orchestrator.policy.state import STATE_VERSION
from orchestrator.policy.trial import AttemptRecord

__all__ = [
    "RESTART_KINDS",
    "RestartRecord",
    "CONTINUE",
    "EPOCHS",
    "INIT_KINDS",
    "INNER_RULES",
    "OPTIONAL_KEYS",
    "PAUSE",
    "PRUNE",
    "RESTART",
    "RULE_NAMES",
    "SECONDS",
    "STATE_VERSION",
    "STOP",
    "AshaRungs",
    "AttemptRecord",
    "ConvergencePolicy",
    "ConvergenceSettings",
    "CostRungs",
    "Decision",
    "GuardedRule",
    "MetricScale",
    "PolicyConfig",
    "PolicySettings",
    "RankRule",
    "Reading",
    "SettingError",
    "coverage_line",
    "decision_data",
    "decision_from_data",
    "decision_outcome",
    "decision_text",
    "DECISION_WIDTH",
    "policy_from_settings",
    "rule_coverage",
    "thresholds_from",
]
