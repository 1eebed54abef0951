"""The convergence policy: a per-trial state machine that turns verdicts into decisions.

Pure (numpy, stdlib and ``analysis.convergence``): no Ray, torch, MLflow or Hydra, so every
decision can be replayed on recorded curves and reproduced offline. Keyed by ``trial_id``.

Rules, checked in this order on each epoch of a trial:

1. The curve is diagnosed by :func:`analysis.convergence.diagnose` against the best final
   metric of the trials that finished so far.
2. ``diverged`` -> **prune**. ``predicted_worse`` -> **prune** (when enabled).
3. ``stuck`` -> **restart** from scratch with a new seed (derived from sweep seed, trial and
   attempt), when the trial has restarts left (``max_restarts``) and the sweep-wide restart
   budget (``restart_budget`` x the sweep's total epoch budget) is not spent; else **prune**.
   ``plateau_bad`` -> **restart** under the same limits; else **stop** (it converged).
4. ``oscillating`` -> **restart** with a lower learning rate when that remedy is on.
5. ``converged`` -> **stop**: the trial is complete and its value counts.
6. Otherwise the optional inner rule (e.g. ASHA-style rungs) may prune; else **continue**.

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
)
from trainables.seeding import derive_seed

CONTINUE, STOP, PRUNE, RESTART = "continue", "stop", "prune", "restart"
STATE_VERSION = 1


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
    """Settings of the policy; validated on creation.

    Args:
        mode: "max" when a higher metric is better, else "min".
        chance: the metric of a random guess (e.g. 0.1 for 10 classes), or None.
        max_restarts: restarts allowed per trial.
        restart_budget: fraction of the sweep's total epoch budget that restarts may spend.
        restart_on_plateau_bad: restart a trial that converged far below the best.
        stop_converged: stop trials that converged.
        prune_predicted_worse: prune trials whose extrapolated optimistic end loses to the best.
        remedy_lr_factor: when set, an oscillating trial restarts with lr times this factor.
        remedy_leaky_relu: when true, a trial stuck with dead ReLUs restarts with leaky_relu.
        history: epochs of each series kept per trial.
    """

    mode: str = "max"
    chance: float | None = None
    max_restarts: int = 2
    restart_budget: float = 0.25
    restart_on_plateau_bad: bool = True
    stop_converged: bool = True
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
        if not 0.0 <= self.restart_budget <= 1.0:
            raise ValueError(f"restart_budget: must be in [0, 1], got {self.restart_budget!r}")
        if self.remedy_lr_factor is not None and not 0.0 < self.remedy_lr_factor < 1.0:
            raise ValueError(f"remedy_lr_factor: must be in (0, 1), got {self.remedy_lr_factor!r}")
        if self.history < self.thresholds.window + 1:
            raise ValueError(f"history: must exceed thresholds.window, got {self.history!r}")


def thresholds_from(values: dict[str, Any]) -> Thresholds:
    """Thresholds with ``values`` overriding the defaults; an unknown name is a ValueError."""
    known = set(Thresholds.__dataclass_fields__)
    for name in values:
        if name not in known:
            raise ValueError(f"unknown threshold {name!r} (known: {', '.join(sorted(known))})")
    return Thresholds(**values)


class RankRule(Protocol):
    """An inner rule over plain numbers, consulted when the curve itself says nothing."""

    def should_prune(self, trial_id: str, epoch: int, value: float) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
        self.initial_loss: float | None = None
        self.lowest_loss: float | None = None  # lowest finite loss of the attempt
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
        self.epoch, self.initial_loss, self.lowest_loss = 0, None, None


def _finite_or_nan(value: float | None) -> float:
    return float(value) if value is not None else math.nan


class ConvergencePolicy:
    """Decides continue / stop / prune / restart for each trial from its curves."""

    def __init__(
        self,
        config: PolicyConfig,
        *,
        budget: int,
        total_epochs: int | None = None,
        sweep_seed: int = 0,
        inner: RankRule | None = None,
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1 epoch, got {budget=}")
        self.config = config
        self.budget = budget
        self.total_epochs = total_epochs
        self.sweep_seed = sweep_seed
        self.inner = inner
        self.trials: dict[str, _Trial] = {}
        self.best: float | None = None
        self.restart_epochs = 0  # epochs trained by attempts after the first
        self.epochs = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def _better(self, a: float, b: float) -> bool:
        return a > b if self.config.mode == "max" else a < b

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

    def complete(self, trial_id: str, final: float | None, outcome: str = "completed") -> None:
        """Record a trial's end; a finite final value of a finished trial updates the best."""
        trial = self._trial(trial_id)
        record = trial.lineage[-1]
        record.final, record.outcome = final, outcome
        trial.finished = True
        counts = outcome in ("completed", "converged")
        if counts and final is not None and math.isfinite(final):
            if self.best is None or self._better(final, self.best):
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
    ) -> Decision:
        """Take one epoch's numbers of a trial's current attempt and decide what to do.

        NaN policy: a non-finite loss is kept and diagnosed as divergence; a missing or NaN
        diagnostic (grad_norm, dead_frac) only disables the rule that needs it.
        """
        trial = self._trial(trial_id)
        trial.epoch = epoch
        if trial.initial_loss is None:
            trial.initial_loss = loss
        if math.isfinite(loss) and (trial.lowest_loss is None or loss < trial.lowest_loss):
            trial.lowest_loss = float(loss)
        trial.loss.append(float(loss))
        trial.metric.append(float(metric))
        trial.grad.append(_finite_or_nan(grad_norm))
        trial.dead.append(_finite_or_nan(dead_frac))
        trial.lineage[-1].epochs = epoch
        self.epochs += 1
        if trial.attempt > 0:
            self.restart_epochs += 1
        verdict = diagnose(
            list(trial.loss),
            metric=list(trial.metric),
            mode=self.config.mode,
            grad_norm=list(trial.grad),
            dead_frac=list(trial.dead),
            budget=self.budget,
            best=self.best,
            chance=self.config.chance,
            start_epoch=epoch - len(trial.loss) + 1,
            initial_loss=trial.initial_loss,
            best_loss=trial.lowest_loss,
            thresholds=self.config.thresholds,
        )
        return self._decide(trial_id, trial, verdict)

    def _decide(self, trial_id: str, trial: _Trial, verdict: Verdict) -> Decision:
        c = self.config
        status = verdict.status
        if status == DIVERGED:
            return Decision(PRUNE, verdict.reason, verdict, trial.attempt)
        if status == PREDICTED_WORSE and c.prune_predicted_worse:
            return Decision(PRUNE, verdict.reason, verdict, trial.attempt)
        if status == STUCK:
            return self._restart(trial_id, trial, verdict) or Decision(
                PRUNE, f"{verdict.reason}; no restart left", verdict, trial.attempt
            )
        if status == PLATEAU_BAD:
            restart = self._restart(trial_id, trial, verdict) if c.restart_on_plateau_bad else None
            if restart is not None:
                return restart
            return Decision(STOP, verdict.reason, verdict, trial.attempt)
        if status == OSCILLATING and c.remedy_lr_factor is not None:
            restart = self._restart(trial_id, trial, verdict)
            if restart is not None:
                return restart
        if status == CONVERGED and c.stop_converged:
            return Decision(STOP, verdict.reason, verdict, trial.attempt)
        if self.inner is not None and trial.metric and math.isfinite(trial.metric[-1]):
            sign = 1.0 if c.mode == "max" else -1.0
            if self.inner.should_prune(trial_id, trial.epoch, sign * trial.metric[-1]):
                return Decision(
                    PRUNE, f"inner rule: below its rung at epoch {trial.epoch}", verdict, trial.attempt
                )
        return Decision(CONTINUE, verdict.reason, verdict, trial.attempt)

    def _remedy(self, trial: _Trial, verdict: Verdict) -> dict[str, Any]:
        c = self.config
        if verdict.status == OSCILLATING and c.remedy_lr_factor is not None and "lr" in trial.params:
            return {"lr": float(trial.params["lr"]) * c.remedy_lr_factor}
        if verdict.kind == "dead_relu" and c.remedy_leaky_relu and trial.params.get("activation") == "relu":
            return {"activation": "leaky_relu"}
        return {}

    def _restart(self, trial_id: str, trial: _Trial, verdict: Verdict) -> Decision | None:
        """A restart decision when the trial and the sweep still have restart budget, else None."""
        if trial.attempt >= self.config.max_restarts or not self.restart_budget_left():
            return None
        attempt = trial.attempt + 1
        key = trial.seed_key if trial.seed_key is not None else trial_id
        seed = derive_seed(self.sweep_seed, key, attempt)
        changes = self._remedy(trial, verdict)
        previous = trial.lineage[-1]
        previous.final = trial.metric[-1] if trial.metric else None
        previous.outcome = f"restarted: {verdict.status}"
        trial.lineage.append(AttemptRecord(attempt, seed, verdict.reason))
        trial.params.update(changes)
        trial.reset()
        return Decision(RESTART, verdict.reason, verdict, attempt, seed, changes)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain, JSON-serialisable data with a version number."""
        return {
            "version": STATE_VERSION,
            "best": self.best,
            "epochs": self.epochs,
            "restart_epochs": self.restart_epochs,
            "trials": {
                tid: {
                    "loss": list(t.loss),
                    "metric": list(t.metric),
                    "grad": list(t.grad),
                    "dead": list(t.dead),
                    "epoch": t.epoch,
                    "initial_loss": t.initial_loss,
                    "lowest_loss": t.lowest_loss,
                    "params": t.params,
                    "seed_key": t.seed_key,
                    "finished": t.finished,
                    "lineage": [asdict(r) for r in t.lineage],
                }
                for tid, t in self.trials.items()
            },
            "inner": self.inner.state_dict() if self.inner is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; refuses another version."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"policy state version {state.get('version')!r} is not {STATE_VERSION}")
        self.best = state["best"]
        self.epochs = int(state["epochs"])
        self.restart_epochs = int(state["restart_epochs"])
        self.trials = {}
        for tid, data in state["trials"].items():
            trial = self._trial(tid)
            for name in ("loss", "metric", "grad", "dead"):
                getattr(trial, name).extend(data[name])
            trial.epoch, trial.initial_loss = data["epoch"], data["initial_loss"]
            trial.lowest_loss = data["lowest_loss"]
            trial.params, trial.finished = dict(data["params"]), bool(data["finished"])
            trial.seed_key = data["seed_key"]
            trial.lineage = [AttemptRecord(**r) for r in data["lineage"]]
        if self.inner is not None and state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])
