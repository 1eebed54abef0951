"""The convergence policy: a per-trial state machine that turns verdicts into decisions.

Pure (numpy, stdlib and ``analysis.convergence``): no Ray, torch, MLflow or Hydra, so every
decision can be replayed on recorded curves and reproduced offline. Keyed by ``trial_id``.

Two references, in metric units: the *best final*, the best value of the trials that
finished (completed, or stopped as converged), and the *leader*, the best metric any other
trial has reported so far (at any epoch) or the best final when that is better. Rules,
checked in this order on each epoch of a trial's current attempt (margins in metric units;
``thresholds`` are :class:`Thresholds`):

1. The curve is diagnosed by :func:`analysis.convergence.diagnose` against the leader.
2. ``diverged`` -> **prune** at once.
3. *Collapsed* -> **restart** from scratch with a new seed (derived from sweep seed, trial and
   attempt): the attempt learned (its best metric beat ``chance`` by more than
   ``collapse_margin``) and then fell back to chance (its last ``thresholds.window`` epochs
   within ``thresholds.chance_margin`` of it): the trajectory failed, not the configuration
   (e.g. ReLUs that died after one bad step). Checked before the rules that would prune it;
   recorded as a stuck restart.
4. ``stuck`` -> **restart** when the evidence points at the initialisation: dead ReLUs or a
   vanishing gradient, or the sweep's own restarts pay off (at least ``restart_record``
   restarts finished and at least ``restart_success`` of them ended better than the attempt
   they replaced, by more than ``thresholds.chance_margin``); else **prune**: most stuck
   configurations are stuck for every seed.
5. ``predicted_worse`` (even the optimistic end of the curve loses to the leader by more than
   ``thresholds.predict_margin``) -> **prune** (when ``prune_predicted_worse``).
6. ``plateau_bad`` -> **restart** when ``restart_on_plateau_bad``; else **stop** (it
   converged; its value counts).
7. ``oscillating`` -> **restart** with ``lr`` x ``remedy_lr_factor`` when that remedy is on;
   else **prune** when the mean of its last window is below the leader by more than
   ``thresholds.bad_margin``.
8. ``converged`` -> **stop** (when ``stop_converged``), unless the trial is a *contender* (its
   level is within ``contender_margin`` of the best final or above it; before any trial
   finished nothing is) or less than ``stop_min_left`` of its budget is left: those run on to
   the budget, so the sweep's best result is a full-budget one.
9. The inner rank rule (``inner``, e.g. :class:`orchestrator.rungs.AshaRungs`: at a rung, below
   the top share of the values recorded there before it) may **prune**, unless one of its
   guards spares the trial: the loss rule (``loss_inner``: its loss ranks near the top of
   the rung, as a metric that lags its loss often catches up) or the curve (its optimistic
   end, :func:`analysis.convergence.optimistic_final`, could still beat the leader). With
   compute rungs (``cost_inner``, :class:`orchestrator.rungs.CostRungs`) a trial is also
   judged at equal training time, with its own loss rule (``cost_loss_inner``): cut at either
   kind of rung (and not spared there, nor by the curve), it is pruned.
10. Otherwise **continue**.

Every restart stays within ``max_restarts`` per trial and the sweep-wide ``restart_budget``
(share of the sweep's total epoch budget); without either, the rule's pruning applies.

NaN policy: a non-finite loss is diagnosed as divergence; a NaN metric never becomes a
leader or a best final and counts as the worst value at a rung.

Memory per trial is bounded: the last ``history`` epochs of each series plus a summary.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from analysis.convergence import (
    CONVERGED,
    DIVERGED,
    OSCILLATING,
    PLATEAU_BAD,
    PREDICTED_WORSE,
    STUCK,
    Thresholds,
    Verdict,
    diagnose,
    optimistic_final,
)
from orchestrator.rungs import AshaRungs, CostRungs
from orchestrator.seeding import derive_seed

CONTINUE, STOP, PRUNE, RESTART = "continue", "stop", "prune", "restart"
STATE_VERSION = 2
#: Stuck kinds that point at the initialisation, not the configuration.
INIT_KINDS = ("dead_relu", "vanishing_grad")


@dataclass(frozen=True)
class Decision:
    """What to do with a trial after one epoch, and why.

    For ``restart``: ``attempt`` and ``seed`` are those of the new attempt and ``changes``
    holds the hyperparameters a remedy changed (empty when none).
    """

    action: str
    reason: str
    verdict: Verdict | None = None
    attempt: int = 0
    seed: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyConfig:
    """Settings of the policy; validated on creation (ValueError naming the field).

    Args:
        mode: "max" when a higher metric is better, else "min".
        chance: the metric of a random guess (e.g. 0.1 for 10 classes), or None.
        max_restarts: restarts allowed per trial.
        restart_budget: fraction of the sweep's total epoch budget that restarts may spend.
        collapse_margin: an attempt whose best metric beat ``chance`` by more than this and
            that fell back to chance collapsed: it restarts.
        restart_success: a stuck trial without evidence against its initialisation restarts
            while at least this share of the sweep's finished restarts ended better than the
            attempt they replaced ...
        restart_record: ... and at least this many restarts finished.
        restart_on_plateau_bad: restart a trial that converged far below the leader.
        stop_converged: stop trials that converged.
        stop_min_left: ... only while at least this share of their budget is left.
        contender_margin: a converged trial within this of the best final (or above) runs on.
        prune_predicted_worse: prune trials whose extrapolated optimistic end loses to the leader.
        remedy_lr_factor: when set, an oscillating trial restarts with lr times this factor.
        remedy_leaky_relu: when true, a trial stuck with dead ReLUs restarts with leaky_relu.
        history: epochs of each series kept per trial.
        thresholds: the thresholds of the diagnosis.
    """

    mode: str = "max"
    chance: float | None = None
    max_restarts: int = 1
    restart_budget: float = 0.1
    collapse_margin: float = 0.2
    restart_success: float = 0.7
    restart_record: int = 3
    restart_on_plateau_bad: bool = False
    stop_converged: bool = True
    stop_min_left: float = 0.25
    contender_margin: float = 0.005
    prune_predicted_worse: bool = True
    remedy_lr_factor: float | None = None
    remedy_leaky_relu: bool = False
    history: int = 64
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode: must be 'max' or 'min', got {self.mode!r}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts: must be >= 0, got {self.max_restarts!r}")
        for name in ("restart_budget", "restart_success", "stop_min_left"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)!r}")
        if not self.collapse_margin > 0.0:
            raise ValueError(f"collapse_margin: must be > 0, got {self.collapse_margin!r}")
        if self.restart_record < 1:
            raise ValueError(f"restart_record: must be >= 1, got {self.restart_record!r}")
        if not self.contender_margin >= 0.0:
            raise ValueError(f"contender_margin: must be >= 0, got {self.contender_margin!r}")
        if self.remedy_lr_factor is not None and not 0.0 < self.remedy_lr_factor < 1.0:
            raise ValueError(f"remedy_lr_factor: must be in (0, 1), got {self.remedy_lr_factor!r}")
        if self.history < 2 * self.thresholds.window:
            raise ValueError(f"history: must be at least 2 x thresholds.window, got {self.history!r}")


def thresholds_from(values: dict[str, Any]) -> Thresholds:
    """Thresholds with ``values`` overriding the defaults; an unknown name is a ValueError."""
    known = set(Thresholds.__dataclass_fields__)
    for name in values:
        if name not in known:
            raise ValueError(f"unknown threshold {name!r} (known: {', '.join(sorted(known))})")
    return Thresholds(**values)


class RankRule(Protocol):
    """A rule over plain numbers ("higher is better"), consulted when the curve says nothing.

    ``at`` is the trial's epoch (epoch rungs) or its training seconds (compute rungs).
    """

    def should_prune(self, trial_id: str, at: float, value: float) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CostRule(RankRule, Protocol):
    """A rank rule over training time, whose time unit is fixed from trials' epoch durations."""

    def calibrate(self, epoch_seconds: float | None) -> None: ...


@dataclass
class AttemptRecord:
    """One attempt of a trial: its seed, why it started, how many epochs it trained, where it ended."""

    attempt: int
    seed: int | None
    reason: str
    epochs: int = 0
    final: float | None = None
    outcome: str | None = None


class _Trial:
    """Bounded per-trial state: the current attempt's recent series plus a summary."""

    def __init__(self, history: int) -> None:
        self.loss: deque[float] = deque(maxlen=history)
        self.metric: deque[float] = deque(maxlen=history)
        self.grad: deque[float] = deque(maxlen=history)
        self.dead: deque[float] = deque(maxlen=history)
        self.epoch = 0
        self.cost = 0.0  # training seconds of the current attempt
        self.initial_loss: float | None = None
        self.lowest_loss: float | None = None  # lowest finite loss of the attempt
        self.peak: float | None = None  # best finite metric of the attempt, signed: higher is better
        self.params: dict[str, Any] = {}
        self.seed_key: str | int | None = None
        self.lineage: list[AttemptRecord] = [AttemptRecord(0, None, "first attempt")]
        self.finished = False

    @property
    def attempt(self) -> int:
        return self.lineage[-1].attempt

    def reset(self) -> None:
        for series in (self.loss, self.metric, self.grad, self.dead):
            series.clear()
        self.epoch, self.initial_loss, self.lowest_loss, self.peak = 0, None, None, None
        self.cost = 0.0


def _finite_or_nan(value: float | None) -> float:
    return float(value) if value is not None else math.nan


class ConvergencePolicy:
    """Decides continue / stop / prune / restart for each trial from its curves.

    Args:
        config: the settings.
        budget: epochs of one attempt.
        total_epochs: the sweep's epoch budget (trials x budget) for the restart budget; None:
            restarts are limited per trial only.
        sweep_seed: seeds the restarts' seeds.
        inner: the rank rule over the metric (e.g. :class:`orchestrator.rungs.AshaRungs`).
        loss_inner: a rank rule over the loss that spares a trial it would keep; it sees
            ``-loss`` at the epochs ``inner`` is consulted.
        cost_inner: a rank rule over the metric at equal training time (compute rungs).
        cost_loss_inner: the loss rule of the compute rungs.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        budget: int,
        total_epochs: int | None = None,
        sweep_seed: int = 0,
        inner: RankRule | None = None,
        loss_inner: RankRule | None = None,
        cost_inner: CostRule | None = None,
        cost_loss_inner: CostRule | None = None,
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1 epoch, got {budget=}")
        self.config = config
        self.budget = budget
        self.total_epochs = total_epochs
        self.sweep_seed = sweep_seed
        self.inner = inner
        self.loss_inner = loss_inner
        self.cost_inner = cost_inner
        self.cost_loss_inner = cost_loss_inner
        self.sign = 1.0 if config.mode == "max" else -1.0
        self.trials: dict[str, _Trial] = {}
        self.best: float | None = None  # best final of the finished trials
        self.leaders: list[tuple[float, str]] = []  # the two best (signed metric, trial id) so far
        self.restart_epochs = 0  # epochs trained by attempts after the first
        self.epochs = 0
        self.restarts_finished = 0
        self.restarts_succeeded = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def _trial(self, trial_id: str) -> _Trial:
        if trial_id not in self.trials:
            self.trials[trial_id] = _Trial(self.config.history)
        return self.trials[trial_id]

    def add(
        self, trial_id: str, params: dict[str, Any] | None = None, seed_key: str | int | None = None
    ) -> None:
        """Register a trial, the hyperparameters it runs with, and what its seeds derive from.

        A restart's seed is ``derive_seed(sweep_seed, seed_key, attempt)``; ``seed_key``
        defaults to the trial id (pass a stable index to make seeds reproducible).
        """
        trial = self._trial(trial_id)
        trial.params = dict(params or {})
        trial.seed_key = seed_key

    def lineage(self, trial_id: str) -> list[AttemptRecord]:
        """The attempts of a trial so far, first one first."""
        return list(self._trial(trial_id).lineage)

    def restart_budget_left(self) -> bool:
        """True while restarts have spent less than their share of the sweep's epochs."""
        if self.total_epochs is None:
            return True
        return self.restart_epochs < self.config.restart_budget * self.total_epochs

    def restarts_pay_off(self) -> bool:
        """True when the sweep's finished restarts mostly ended better than what they replaced."""
        c, finished = self.config, self.restarts_finished
        return finished >= c.restart_record and self.restarts_succeeded >= c.restart_success * finished

    def leader(self, trial_id: str | None = None) -> float | None:
        """The best metric reported so far by a trial other than ``trial_id``, or the best
        final when that is better (None while there is neither)."""
        signed = next((v for v, tid in self.leaders if tid != trial_id), None)
        if self.best is not None and (signed is None or self.sign * self.best > signed):
            return self.best
        return None if signed is None else self.sign * signed

    def _lead(self, trial_id: str, metric: float) -> None:
        """Keep the two best (signed metric, trial id) pairs, one per trial."""
        signed = self.sign * metric
        if not math.isfinite(signed) or any(t == trial_id and v >= signed for v, t in self.leaders):
            return
        others = [(v, t) for v, t in self.leaders if t != trial_id]
        self.leaders = sorted([*others, (signed, trial_id)], reverse=True)[:2]

    def _end_attempt(self, trial: _Trial, final: float | None) -> None:
        """Close the current attempt; a restarted one is scored against the attempt it replaced."""
        record = trial.lineage[-1]
        record.final = final
        if record.attempt == 0:
            return
        before = trial.lineage[-2].final
        self.restarts_finished += 1
        if final is not None and before is not None and math.isfinite(final) and math.isfinite(before):
            self.restarts_succeeded += self.sign * (final - before) > self.config.thresholds.chance_margin

    def complete(self, trial_id: str, final: float | None, outcome: str = "completed") -> None:
        """Record a trial's end; a finite final value of a finished trial updates the best.

        Only "completed" and "converged" outcomes count for the best final; a trial is
        completed once (later calls are ignored).
        """
        trial = self._trial(trial_id)
        if trial.finished:
            return
        self._end_attempt(trial, final)
        trial.lineage[-1].outcome = outcome
        trial.finished = True
        counts = outcome in ("completed", "converged")
        if counts and final is not None and math.isfinite(final):
            if self.best is None or self.sign * (final - self.best) > 0:
                self.best = final

    # -- the decision --------------------------------------------------------------------
    def observe(
        self,
        trial_id: str,
        epoch: int,
        loss: float,
        metric: float,
        grad_norm: float | None = None,
        dead_frac: float | None = None,
        seconds: float | None = None,
    ) -> Decision:
        """Take one epoch's numbers of a trial's current attempt and decide what to do.

        ``seconds`` is what the epoch took; an attempt's training time (for the compute rungs)
        counts its epochs after the first (start-up work goes into the first), and the second
        epochs of first attempts calibrate the compute rungs' unit. NaN policy: a non-finite
        loss is kept and diagnosed as divergence; a missing or NaN diagnostic (grad_norm,
        dead_frac, seconds) only disables the rule that needs it.
        """
        trial = self._trial(trial_id)
        trial.epoch = epoch
        if epoch > 1 and seconds is not None and math.isfinite(seconds) and seconds >= 0.0:
            trial.cost += float(seconds)
            if epoch == 2 and trial.attempt == 0:
                for rule in (self.cost_inner, self.cost_loss_inner):
                    if rule is not None:
                        rule.calibrate(float(seconds))
        if trial.initial_loss is None:
            trial.initial_loss = loss
        if math.isfinite(loss) and (trial.lowest_loss is None or loss < trial.lowest_loss):
            trial.lowest_loss = float(loss)
        if math.isfinite(metric) and (trial.peak is None or self.sign * metric > trial.peak):
            trial.peak = self.sign * float(metric)
        trial.loss.append(float(loss))
        trial.metric.append(float(metric))
        trial.grad.append(_finite_or_nan(grad_norm))
        trial.dead.append(_finite_or_nan(dead_frac))
        trial.lineage[-1].epochs = epoch
        self.epochs += 1
        if trial.attempt > 0:
            self.restart_epochs += 1
        leader = self.leader(trial_id)
        self._lead(trial_id, metric)
        verdict = diagnose(
            trial.loss,
            metric=trial.metric,
            mode=self.config.mode,
            grad_norm=trial.grad,
            dead_frac=trial.dead,
            budget=self.budget,
            best=leader,
            chance=self.config.chance,
            start_epoch=epoch - len(trial.loss) + 1,
            initial_loss=trial.initial_loss,
            best_loss=trial.lowest_loss,
            thresholds=self.config.thresholds,
        )
        return self._decide(trial_id, trial, verdict, leader)

    def _decide(self, trial_id: str, trial: _Trial, verdict: Verdict, leader: float | None) -> Decision:
        c, th, status = self.config, self.config.thresholds, verdict.status
        attempt = trial.attempt
        if status == DIVERGED:
            return Decision(PRUNE, verdict.reason, verdict, attempt)
        if self._collapsed(trial):
            peak, chance = self.sign * (trial.peak or 0.0), self.config.chance
            reason = f"stuck: collapsed back to chance {chance:.3g} after reaching {peak:.3g}"
            if restart := self._restart(trial_id, trial, verdict, "stuck (collapsed)", reason):
                return restart
        if status == STUCK:
            worth = verdict.kind in INIT_KINDS or self.restarts_pay_off()
            restart = self._restart(trial_id, trial, verdict) if worth else None
            return restart or Decision(PRUNE, f"{verdict.reason}; not restarted", verdict, attempt)
        if status == PREDICTED_WORSE and c.prune_predicted_worse:
            return Decision(PRUNE, verdict.reason, verdict, attempt)
        if status == PLATEAU_BAD:
            restart = self._restart(trial_id, trial, verdict) if c.restart_on_plateau_bad else None
            return restart or Decision(STOP, verdict.reason, verdict, attempt)
        if status == OSCILLATING:
            restart = self._restart(trial_id, trial, verdict) if c.remedy_lr_factor is not None else None
            if restart is not None:
                return restart
            recent = [v for v in list(trial.metric)[-th.window :] if math.isfinite(v)]
            mean = sum(recent) / len(recent) if recent else math.nan
            if leader is not None and not self.sign * (mean - leader) >= -th.bad_margin:
                reason = f"{verdict.reason}; its mean {mean:.4g} is far below the leader {leader:.4g}"
                return Decision(PRUNE, reason, verdict, attempt)
        if status == CONVERGED and c.stop_converged:
            level = verdict.evidence["level"]
            contender = self.best is not None and self.sign * (level - self.best) >= -c.contender_margin
            if not contender and self.budget - trial.epoch >= c.stop_min_left * self.budget:
                return Decision(STOP, verdict.reason, verdict, attempt)
            why = "a contender" if contender else "close to its budget"
            return Decision(CONTINUE, f"{verdict.reason}; {why}: runs to the budget", verdict, attempt)
        if (where := self._rank_cut(trial_id, trial, leader)) is not None:
            return Decision(PRUNE, f"rank rule: below its rung at {where}", verdict, attempt)
        return Decision(CONTINUE, verdict.reason, verdict, attempt)

    def _collapsed(self, trial: _Trial) -> bool:
        """The attempt beat chance by more than ``collapse_margin``, then fell back to chance."""
        chance, th = self.config.chance, self.config.thresholds
        if chance is None or trial.peak is None or len(trial.metric) < th.window:
            return False
        if trial.peak - self.sign * chance <= self.config.collapse_margin:
            return False
        if not abs(trial.metric[-1] - chance) <= th.chance_margin:
            return False
        return all(abs(v - chance) <= th.chance_margin for v in list(trial.metric)[-th.window :])

    def _rank_cut(self, trial_id: str, trial: _Trial, leader: float | None) -> str | None:
        """Where the inner rules cut the trial ("epoch 3", "12.5 s of training (epoch 2)"), or
        None: not at a rung, above its cutoff, or spared by the loss rule or the curve."""
        if not trial.metric:
            return None
        key = trial_id if trial.attempt == 0 else f"{trial_id}#{trial.attempt}"
        value = self.sign * trial.metric[-1]
        neg_loss = -(trial.loss[-1] if math.isfinite(trial.loss[-1]) else math.inf)
        where = None
        if self._cut(self.inner, self.loss_inner, key, trial.epoch, value, neg_loss):
            where = f"epoch {trial.epoch}"
        if self._cut(self.cost_inner, self.cost_loss_inner, key, trial.cost, value, neg_loss):
            where = where or f"{trial.cost:.3g} s of training (epoch {trial.epoch})"
        if where is None or leader is None:
            return where
        optimistic = optimistic_final(
            list(trial.metric),
            self.budget,
            mode=self.config.mode,
            start_epoch=trial.epoch - len(trial.metric) + 1,
            thresholds=self.config.thresholds,
        )
        return where if optimistic is None or self.sign * (optimistic - leader) < 0.0 else None

    @staticmethod
    def _cut(
        rule: RankRule | None, guard: RankRule | None, key: str, at: float, value: float, neg_loss: float
    ) -> bool:
        """``rule`` cuts at ``at`` and ``guard`` (over ``neg_loss``) does not spare; both record."""
        if rule is None:
            return False
        cut = rule.should_prune(key, at, value)
        return guard.should_prune(key, at, neg_loss) and cut if guard is not None else cut

    def _remedy(self, trial: _Trial, verdict: Verdict) -> dict[str, Any]:
        c = self.config
        if verdict.status == OSCILLATING and c.remedy_lr_factor is not None and "lr" in trial.params:
            return {"lr": float(trial.params["lr"]) * c.remedy_lr_factor}
        if verdict.kind == "dead_relu" and c.remedy_leaky_relu and trial.params.get("activation") == "relu":
            return {"activation": "leaky_relu"}
        return {}

    def _restart(
        self,
        trial_id: str,
        trial: _Trial,
        verdict: Verdict,
        cause: str | None = None,
        reason: str | None = None,
    ) -> Decision | None:
        """A restart decision when the trial and the sweep still have restart budget, else None.

        ``cause`` (default: the verdict's status) goes into the lineage as "restarted: <cause>";
        ``reason`` (default: the verdict's) is the new attempt's reason.
        """
        if trial.attempt >= self.config.max_restarts or not self.restart_budget_left():
            return None
        attempt = trial.attempt + 1
        key = trial.seed_key if trial.seed_key is not None else trial_id
        seed = derive_seed(self.sweep_seed, key, attempt)
        changes = self._remedy(trial, verdict)
        reason = reason or verdict.reason
        self._end_attempt(trial, trial.metric[-1] if trial.metric else None)
        trial.lineage[-1].outcome = f"restarted: {cause or verdict.status}"
        trial.lineage.append(AttemptRecord(attempt, seed, reason))
        trial.params.update(changes)
        trial.reset()
        return Decision(RESTART, reason, verdict, attempt, seed, changes)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain, JSON-serialisable data with a version number."""
        return {
            "version": STATE_VERSION,
            "best": self.best,
            "leaders": [list(pair) for pair in self.leaders],
            "epochs": self.epochs,
            "restart_epochs": self.restart_epochs,
            "restarts_finished": self.restarts_finished,
            "restarts_succeeded": self.restarts_succeeded,
            "trials": {
                tid: {
                    "loss": list(t.loss),
                    "metric": list(t.metric),
                    "grad": list(t.grad),
                    "dead": list(t.dead),
                    "epoch": t.epoch,
                    "cost": t.cost,
                    "initial_loss": t.initial_loss,
                    "lowest_loss": t.lowest_loss,
                    "peak": t.peak,
                    "params": t.params,
                    "seed_key": t.seed_key,
                    "finished": t.finished,
                    "lineage": [asdict(r) for r in t.lineage],
                }
                for tid, t in self.trials.items()
            },
            "inner": self.inner.state_dict() if self.inner is not None else None,
            "loss_inner": self.loss_inner.state_dict() if self.loss_inner is not None else None,
            "cost_inner": self.cost_inner.state_dict() if self.cost_inner is not None else None,
            "cost_loss_inner": (
                self.cost_loss_inner.state_dict() if self.cost_loss_inner is not None else None
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; refuses another version."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"policy state version {state.get('version')!r} is not {STATE_VERSION}")
        self.best = state["best"]
        self.leaders = [(float(v), str(t)) for v, t in state["leaders"]]
        self.epochs = int(state["epochs"])
        self.restart_epochs = int(state["restart_epochs"])
        self.restarts_finished = int(state["restarts_finished"])
        self.restarts_succeeded = int(state["restarts_succeeded"])
        self.trials = {}
        for tid, data in state["trials"].items():
            trial = self._trial(tid)
            for name in ("loss", "metric", "grad", "dead"):
                getattr(trial, name).extend(data[name])
            trial.epoch, trial.initial_loss = data["epoch"], data["initial_loss"]
            trial.cost = float(data.get("cost", 0.0))  # absent in states saved before compute rungs
            trial.lowest_loss, trial.peak = data["lowest_loss"], data["peak"]
            trial.params, trial.finished = dict(data["params"]), bool(data["finished"])
            trial.seed_key = data["seed_key"]
            trial.lineage = [AttemptRecord(**r) for r in data["lineage"]]
        for name in ("inner", "loss_inner", "cost_inner", "cost_loss_inner"):
            rule = getattr(self, name)
            if rule is not None and state.get(name) is not None:
                rule.load_state_dict(state[name])


# -- building from settings ------------------------------------------------------------------
#: Keys of a scheduler config that are not the policy's (the scheduler's name, other rules').
NOT_POLICY_SETTINGS = ("name", "min_samples_required")
#: Keys that place the inner rank rule; the rest are :class:`PolicyConfig` fields.
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
    None) with ``grace_period`` and ``reduction_factor`` placing
    :class:`orchestrator.rungs.AshaRungs` (grace capped at ``budget``), used in sweeps of at
    least ``reduction_factor**2`` trials (``total_epochs / budget``; in smaller ones a rung's
    ranking is noise); ``loss_guard``: a second set of rungs over the loss that spares a trial
    ranking in its top ``1 / reduction_factor**2``; ``cost_rungs``: also the same rungs over
    training time (:class:`orchestrator.rungs.CostRungs`, its unit the median second epoch of
    the first ``cost_calibration`` trials), each with its loss guard when ``loss_guard``.
    A missing key takes the default of :class:`PolicyConfig`
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
    rules: dict[str, Any] = {}
    grace = min(int(settings.get("grace_period", 1)), budget)
    factor = float(settings.get("reduction_factor", 3.0))
    big_enough = total_epochs is None or total_epochs >= factor**2 * budget
    guard = 1.0 / factor**2 if settings.get("loss_guard", False) else None
    if inner_name == "asha" and big_enough:
        rules["inner"] = AshaRungs(grace, factor, budget)
        rules["loss_inner"] = AshaRungs(grace, factor, budget, keep=guard) if guard else None
        if settings.get("cost_rungs", False):
            rules["cost_inner"] = CostRungs(grace, factor, budget, calibration=calibration)
            rules["cost_loss_inner"] = (
                CostRungs(grace, factor, budget, keep=guard, calibration=calibration) if guard else None
            )
    return ConvergencePolicy(config, budget=budget, total_epochs=total_epochs, sweep_seed=sweep_seed, **rules)
