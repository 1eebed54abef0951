"""The Ray searcher over an Optuna study: trials numbered, outcomes told as the scheduler decided
them, restarts recorded, no configuration run twice unless asked."""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

#: Proposals equal to an earlier trial asked again for one Ray trial before the last is run anyway
#: (a small discrete space that is used up).
MAX_DUPLICATE_ASKS = 20
#: Finished states whose configuration is not run again (a FAIL, a crash, may be tried again).
_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _as_values(value: float | list[float | None] | None) -> list[float] | None:
    """A trial's objective value(s) as the list Optuna is told; None when any is missing or not
    finite (NaN policy: such a trial is told FAIL, never COMPLETE)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]  # type: ignore[arg-type]


class IndexedOptunaSearch(OptunaSearch):
    """OptunaSearch that numbers trials and lets a scheduler say how each one really ended.

    - Each suggestion gets ``trial_index`` (Optuna's trial number), from which trial seeds
      derive, so the same sweep seed gives the same trial seeds from run to run.
    - :meth:`record_outcome` sets the state Optuna is told when the trial completes
      (COMPLETE with its value, or its values with several objectives; PRUNED; FAIL) instead of
      Ray's "stopped means COMPLETE". A trial whose value (any of them) is missing or not finite
      is told FAIL.
    - :meth:`note_restart` keeps a restart in the Optuna trial's user attributes (``attempts``,
      ``restart_reasons``); every trial ends with ``attempts`` and its ``ray_trial_id``.
    - :meth:`supersede` handles a restart that changed hyperparameters: the original Optuna
      trial is told PRUNED, and the final value is credited to the new values (as a trial of
      its own) when they lie inside the search space.
    - A sampled proposal equal to a COMPLETE or PRUNED trial of the study (this sweep's or one
      copied from the sweep it continues) is not run: its Optuna trial is told the earlier
      trial's state and value with the user attribute ``duplicate_of`` (Optuna's FAQ way, so
      the sampler sees the point once more and moves on), and a new proposal is asked, at most
      :data:`MAX_DUPLICATE_ASKS` times. An enqueued configuration is run as it is.
    - Restored from a snapshot (a resumed sweep), trials the persistent study holds as RUNNING
      but the snapshot does not know (asked after it, then the driver died) are told FAIL with
      the user attribute ``lost``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._seen: dict[
            tuple, tuple[int, TrialState, list[float] | None]
        ] = {}  # config -> number, state, values
        self._attempts: dict[str, list[str]] = {}  # trial id -> the reasons of its restarts
        super().__init__(*args, **kwargs)
        self._outcomes: dict[str, tuple[str, Any, dict[str, Any]]] = {}
        self._superseded: dict[str, dict[str, Any]] = {}
        self._told_steps: dict[str, int] = {}  # trial id -> the last step told to Optuna

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        self._scan_finished()

    def _scan_finished(self) -> None:
        for t in self._ot_study.get_trials(deepcopy=False, states=_DONE):
            self._seen.setdefault(_key(t.params), (t.number, t.state, t.values))

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        for _ in range(MAX_DUPLICATE_ASKS):
            if params is None or not self._is_duplicate(trial_id):
                break
            del self._ot_trials[trial_id]
            params = super().suggest(trial_id)
        if params is not None:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            params["trial_index"] = ot_trial.number
        return params

    def _is_duplicate(self, trial_id: str) -> bool:
        """True when the proposal for ``trial_id`` repeats a finished trial (and was told as it)."""
        ot_trial = self._ot_trials[trial_id]
        if ot_trial._fixed_params:  # enqueued: asked for
            return False
        earlier = self._seen.get(_key(ot_trial.params))
        if earlier is None:
            return False
        number, state, values = earlier
        ot_trial.set_user_attr("duplicate_of", number)
        self._ot_study.tell(ot_trial, values if state == TrialState.COMPLETE else None, state=state)
        logger.info("trial %s: the proposal repeats Optuna trial %d; asking again", trial_id, number)
        return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Tell Optuna the intermediate value of each step of a trial's first attempt, once.

        A restart trains from epoch 1 again and a trial resumed from a checkpoint replays its
        last epoch: Optuna keeps one value per step (it warns and ignores a repeated one), so
        those steps are not told again; the final value is told when the trial ends. A trial the
        store already holds as finished (told after the snapshot a resumed sweep started from)
        is not told again.
        """
        step = int(result.get("training_iteration", 0))
        if int(result.get("attempt", 0)) > 0 or step <= self._told_steps.get(trial_id, 0):
            return
        self._told_steps[trial_id] = step
        try:
            super().on_trial_result(trial_id, result)
        except RuntimeError as exc:  # optuna's UpdateFinishedTrialError
            logger.debug("trial %s: not told to Optuna again (%s)", trial_id, exc)

    def record_outcome(
        self, trial_id: str, state: str, value: float | list[float] | None, attrs: dict[str, Any]
    ) -> None:
        """Remember how ``trial_id`` ended (``value``: a list with several objectives); told to
        Optuna when Ray completes the trial."""
        self._outcomes[trial_id] = (state, value, attrs)

    def note_restart(self, trial_id: str, attempt: int, reason: str) -> None:
        """Record that ``trial_id`` restarted as ``attempt`` because of ``reason`` (written now)."""
        reasons = self._attempts.setdefault(trial_id, [])
        reasons.append(reason)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            try:
                ot_trial.set_user_attr("attempts", attempt + 1)
                ot_trial.set_user_attr("restart_reasons", list(reasons))
            except RuntimeError as exc:  # finished in the store already
                logger.debug("trial %s: restart not recorded in Optuna (%s)", trial_id, exc)

    def supersede(self, trial_id: str, changes: dict[str, Any], reason: str) -> None:
        """Mark the trial's original values as superseded by a remedy that changed ``changes``."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("superseded_by", {k: repr(v) for k, v in changes.items()})
        ot_trial.set_user_attr("reason", reason)
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._superseded[trial_id] = {**ot_trial.params, **changes}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._superseded:
            self._credit_new_values(trial_id, result, error)
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            self._set_attrs(ot_trial, {"attempts": len(self._attempts.get(trial_id, ())) + 1})
        outcome = self._outcomes.pop(trial_id, None)
        if outcome is None and isinstance(self.metric, list) and not error and result:
            outcome = ("COMPLETE", [result.get(m) for m in self.metric], {})  # ran to its budget
        if outcome is None or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
        else:
            state, value, attrs = outcome
            self._set_attrs(ot_trial, attrs)
            values = _as_values(value)
            if state == "COMPLETE" and values is None:
                state = "FAIL"
            try:
                self._ot_study.tell(
                    ot_trial, values if state == "COMPLETE" else None, state=TrialState[state]
                )
            except (ValueError, RuntimeError) as exc:
                logger.warning("could not tell Optuna how trial %s ended: %s", trial_id, exc)
            self._completed_trials.add(trial_id)
        if ot_trial is not None:
            self._remember(ot_trial)

    def _set_attrs(self, ot_trial: Any, attrs: dict[str, Any]) -> None:
        try:
            for key, attr in attrs.items():
                ot_trial.set_user_attr(key, attr)
        except RuntimeError as exc:  # finished in the store already (a resumed sweep)
            logger.debug("Optuna trial %d: attributes not set (%s)", ot_trial.number, exc)

    def _remember(self, ot_trial: Any) -> None:
        """Keep a finished configuration, so an equal proposal is not run again."""
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if frozen.state in _DONE:
            self._seen.setdefault(_key(frozen.params), (frozen.number, frozen.state, frozen.values))

    def _credit_new_values(self, trial_id: str, result: dict | None, error: bool) -> None:
        params = self._superseded.pop(trial_id)
        self._completed_trials.add(trial_id)
        state, value, _ = self._outcomes.pop(trial_id, ("COMPLETE", None, {}))
        if value is None and result:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            value = [result.get(m) for m in metrics]
        values = _as_values(value)
        space = self._space
        inside = isinstance(space, dict) and all(
            name in params and space[name]._contains(space[name].to_internal_repr(params[name]))
            for name in space
        )
        if error or state != "COMPLETE" or values is None or not inside:
            return
        self._ot_study.add_trial(
            optuna.trial.create_trial(
                params={name: params[name] for name in space},
                distributions=space,
                values=values,
                user_attrs={"remedy_of": trial_id},
            )
        )

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore (the searcher's state from the snapshot), then the persistent study's
        trials the snapshot does not know told FAIL (``lost``)."""
        super().restore(checkpoint_path)
        known = {t._trial_id for t in self._ot_trials.values()}
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in known:
                lost = "asked after the snapshot the sweep resumed from"
                self._ot_study._storage.set_trial_user_attr(t._trial_id, "lost", lost)
                self._ot_study.tell(t.number, state=TrialState.FAIL)
        self._scan_finished()
