"""The Ray side of freeze-thaw: which paused trial resumes, and whether a pause has its checkpoint.

The policy (:mod:`orchestrator.policy.pausing`) decides which trials are paused and which of them
are promising; this module maps that onto Ray Tune's trials. A trial pauses through Tune's
``PAUSE``: the controller saves the function trainable's latest reported result with its
checkpoint (``FunctionTrainable.save_checkpoint`` returns the last training result) and the
restarted actor restores that checkpoint, so a trial paused on an epoch that reported a
checkpoint (Ray marks that result ``should_checkpoint``) resumes at the next epoch; without one
it would resume from an older checkpoint or from scratch, so it is pruned instead (the reason
says so). Trials checkpoint at the rungs' epochs (``run.checkpoint_at``) for that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.result import SHOULD_CHECKPOINT

from orchestrator.policy import ConvergencePolicy


def has_checkpoint(result: dict[str, Any]) -> bool:
    """Whether ``result`` came with a checkpoint (Ray marks it ``should_checkpoint``)."""
    return result.get(SHOULD_CHECKPOINT) is True


def _limiter(tune_controller: Any) -> Any:
    """Tune's ``ConcurrencyLimiter`` around the searcher (``max_concurrent_trials``), or None."""
    searcher = getattr(getattr(tune_controller, "search_alg", None), "searcher", None)
    while searcher is not None and not hasattr(searcher, "live_trials"):
        searcher = getattr(searcher, "searcher", None)
    return searcher


def release_slot(tune_controller: Any, trial_id: str) -> None:
    """A paused trial leaves the concurrency limit (Tune's ``ConcurrencyLimiter`` counts it live
    until it completes, so paused trials would stop every new one: the sweep would wait forever)."""
    limiter = _limiter(tune_controller)
    if limiter is not None and trial_id in limiter.live_trials:
        limiter.live_trials.discard(trial_id)
        limiter.num_unfinished_live_trials -= 1


def hold_slot(tune_controller: Any, trial_id: str) -> None:
    """A paused trial that resumes or ends counts again (the limiter tells the searcher of a trial
    that completes only if it counts it)."""
    limiter = _limiter(tune_controller)
    if limiter is not None and trial_id not in limiter.live_trials:
        limiter.live_trials.add(trial_id)
        limiter.num_unfinished_live_trials += 1


def wait_again(policy: ConvergencePolicy, trial: Trial) -> None:
    """A trial the policy holds paused that Ray added as PENDING is PAUSED again: Ray requeues a
    restored sweep's PAUSED trials as PENDING, which would start them before new ones (and fill
    Tune's pending slots, so no new trial would start); paused, it waits for its promotion or the
    end as before, and resumes from the checkpoint of the epoch it paused at."""
    if trial.status == Trial.PENDING and policy.is_paused(trial.trial_id):
        trial.set_status(Trial.PAUSED)


def search_finished(tune_controller: Any) -> bool:
    """Whether the searcher has no new configuration left (Tune's ``SearchGenerator.is_finished``);
    True when the controller has no search algorithm that says."""
    is_finished = getattr(getattr(tune_controller, "search_alg", None), "is_finished", None)
    return bool(is_finished()) if callable(is_finished) else True


def trial_to_resume(
    policy: ConvergencePolicy, tune_controller: Any, waiting: Iterable[Trial], *, promoted_only: bool
) -> Trial | None:
    """The PAUSED trial among ``waiting`` that resumes now, marked resumed in the policy, or None.

    A paused trial that would now pass the rung it was cut at resumes first (promoted); unless
    ``promoted_only``, the most promising paused trial resumes (no new configuration is left;
    call :func:`stale` first to stop the ones that can no longer matter).
    """
    by_id = {t.trial_id: t for t in waiting if t.status == Trial.PAUSED}
    chosen, why = (
        next((tid for tid in policy.promotable() if tid in by_id), None),
        "promoted: it passes its rung now",
    )
    if chosen is None and not promoted_only:
        chosen = next((tid for tid in policy.paused() if tid in by_id), None)
        why = "no new configuration left; the most promising paused trial"
    if chosen is None:
        return None
    policy.resume(chosen, why)
    hold_slot(tune_controller, chosen)
    return by_id[chosen]


def stale(policy: ConvergencePolicy, waiting: Iterable[Trial]) -> list[Trial]:
    """The PAUSED trials among ``waiting`` that can no longer matter: no longer within the pause
    margin of their rung's cutoff (:meth:`ConvergencePolicy.still_near`)."""
    return [
        t
        for t in waiting
        if t.status == Trial.PAUSED and policy.is_paused(t.trial_id) and not policy.still_near(t.trial_id)
    ]


#: Why a paused trial is stopped once no new configuration is left and it is no longer near its cutoff.
STALE = "no new configuration left and it is no longer within the pause margin of its rung's cutoff"


def pause_tags(policy: ConvergencePolicy, trial_id: str) -> dict[str, str]:
    """The MLflow tags of a trial's pauses: where and why it was paused, why it resumed or stopped."""
    records = policy.pause_record(trial_id)
    if not records:
        return {}
    last = records[-1]
    tags = {
        "paused_at_epoch": str(last.epoch),
        "pause_reason": last.reason,
        "pauses": str(len(records)),
    }
    if last.resumed is not None:
        tags["resumed_at_epoch"] = str(last.epoch + 1)
        tags["resume_reason"] = last.resumed
    if last.stopped is not None:
        tags["pause_outcome"] = f"stopped while paused: {last.stopped}"
    return tags
