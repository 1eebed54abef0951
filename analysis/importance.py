"""Hyperparameter importance of a finished sweep: Optuna's default evaluator on its final values.

The trials are replayed into an in-memory Optuna study with distributions inferred from the
values each hyperparameter took; Optuna is imported only when the importance is asked for.
"""

from __future__ import annotations

from typing import Any

from analysis.records import SweepRecord


def importance(sweep: SweepRecord) -> dict[str, float] | None:
    """Optuna's default importance evaluator on a study of the trials with a final value.

    Each hyperparameter that varied gets a distribution inferred from its values (strings and
    booleans categorical, integers an int range, floats a float range on a log scale when it
    is positive and spans more than a decade). None with fewer than 3 such trials.
    """
    import optuna

    done = [(t.params, t.final(sweep.metric)) for t in sweep.trials]
    done = [(p, v) for p, v in done if v is not None]
    if len(done) < 3:
        return None
    dists: dict[str, Any] = {}
    for name in sorted({k for p, _ in done for k in p}):
        values = [p.get(name) for p, _ in done]
        if any(v is None for v in values) or len({repr(v) for v in values}) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = min(values), max(values)
            if all(isinstance(v, int) for v in values):
                dists[name] = optuna.distributions.IntDistribution(int(lo), int(hi))
            else:
                dists[name] = optuna.distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo > 10)
        else:
            dists[name] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    for params, value in done:
        chosen = {
            k: (str(params[k]) if isinstance(d, optuna.distributions.CategoricalDistribution) else params[k])
            for k, d in dists.items()
        }
        study.add_trial(optuna.trial.create_trial(params=chosen, distributions=dists, value=value))
    return dict(optuna.importance.get_param_importances(study))
