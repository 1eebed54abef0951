"""A sweep that goes on from an earlier one (``search.continue_from``), and configurations tried
first (``search.enqueue``).

``continue_from`` names an earlier sweep's study: a sweep directory (a path with a ``/``: its
``orchestrator.json`` says where its study is), a study name (``debug_20261205-101500``) or a
sweep name (``debug``: its latest study) in this sweep's store. Its finished trials (COMPLETE,
PRUNED, FAIL) are copied into the new sweep's study before the first trial, so the sampler
models them as its own history; a trial whose hyperparameters are not this sweep's searched
ones, or lie outside their distributions, is left out (the count is logged). The earlier study
must have optimised the same objectives (metric and mode; with several, the same list).

``enqueue`` is a list whose items are configurations (``{hp: value}``, some or all searched
hyperparameters; the others are sampled) or ``{best_of: <sweep>, count: k}`` (the k best
complete trials of that sweep's study, found as ``continue_from`` finds it; with several
objectives, k trials of its Pareto front, best on the first objective first). They are enqueued
in the new study in that order and its first trials take them, counted in ``num_samples``.

Every problem is one ConfigError naming the key, raised before Ray starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.schema import SweepConfig
from orchestrator.space import SearchSpace
from orchestrator.study import ATTR_RUN, StudyInfo, create_sweep_study, open_storage, shown, studies

logger = logging.getLogger(__name__)

KEY_FROM, KEY_ENQUEUE = "search.continue_from", "search.enqueue"
#: The study's user attribute on a copied trial (``<study>#<number>``) and on an enqueued one.
ATTR_COPIED, ATTR_ENQUEUED = "copied_from", "enqueued"
_RECORD = "orchestrator.json"  # orchestrator.resume.RECORD_FILE (that module imports Ray)


@dataclass(frozen=True)
class BestOf:
    """``{best_of: <sweep>, count: k}``: the k best complete trials of that sweep's study."""

    ref: str
    count: int
    key: str


@dataclass
class StudyPlan:
    """The sweep's study: its store (``url``; None for a sweep resumed from before there was
    one), for a new sweep the study it continues and the configurations to try first (each with
    where it came from). :meth:`open`, :meth:`start` and :meth:`note_run` are the steps of a
    sweep's start, in that order."""

    url: str | None
    source: StudyInfo | None = None
    configs: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    new: bool = True  # False: a resumed sweep's study, there already
    storage: Any = None  # the opened store
    copied: int = 0  # trials copied from ``source``

    def open(self) -> None:
        """Open (a new SQLite or journal file: create) the store; ConfigError when it cannot be."""
        self.storage = open_storage(self.url) if self.url else None

    def start(self, name: str, cfg: SweepConfig) -> None:
        """Create a new sweep's study ``name`` (:func:`start_study`); a resumed one is there."""
        if self.storage is not None and self.new:
            self.copied = start_study(self.storage, name, cfg, self)

    def note_run(self, name: str, run_id: str | None) -> None:
        """Keep the sweep's MLflow parent run id in the study (found from it when continued)."""
        if self.storage is not None and run_id:
            self.storage.set_study_user_attr(self.storage.get_study_id_from_name(name), ATTR_RUN, run_id)

    def tags(self, name: str) -> dict[str, str]:
        """The parent run's tags: its study and store, and the sweep it continues."""
        tags = {"optuna_study": name, "optuna_storage": shown(self.url)} if self.url else {}
        if (s := self.source) is not None:
            tags.update(continued_from=s.name, continued_from_sweep=s.sweep)
            tags.update(continued_from_run=s.parent_run_id)
        return {k: v for k, v in tags.items() if v}


def fit_config(params: dict[str, Any], space: SearchSpace, key: str) -> dict[str, Any]:
    """``params`` checked against the searched hyperparameters and converted to their types
    (float for a float range, int for an int one); ConfigError naming ``key.<name>``."""
    out = {}
    for name, value in params.items():
        dist = space.searched.get(name)
        if dist is None:
            why = f"fixed at {space.fixed[name]!r} in this sweep" if name in space.fixed else "unknown"
            searched = ", ".join(space.searched)
            raise ConfigError(f"{key}.{name}: not a searched hyperparameter ({why}; searched: {searched})")
        problem = dist.problem(value)
        if problem is not None:
            raise ConfigError(f"{key}.{name}: {value!r} is {problem}")
        out[name] = int(value) if dist.type == "int" else float(value) if dist.type != "choice" else value
    return out


def parse_enqueue(cfg: SweepConfig) -> list[dict[str, Any] | BestOf]:
    """``search.enqueue`` checked without opening any store: a list (or one item) of
    configurations and ``{best_of, count}`` references, no more than ``num_samples`` in all."""
    value = cfg.search.enqueue
    if value is None:
        return []
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise ConfigError(
            f"{KEY_ENQUEUE}: must be a list of configurations ({{hp: value}}) or "
            f"{{best_of: <sweep>, count: k}} items, got {value!r}"
        )
    out: list[dict[str, Any] | BestOf] = []
    for i, item in enumerate(items):
        key = f"{KEY_ENQUEUE}[{i}]"
        if not isinstance(item, dict) or not item:
            raise ConfigError(
                f"{key}: must be a mapping {{hp: value}} or {{best_of: <sweep>, count: k}}, got {item!r}"
            )
        out.append(_best_of(item, key) if "best_of" in item else fit_config(item, cfg.space, key))
    total = sum(x.count if isinstance(x, BestOf) else 1 for x in out)
    if total > cfg.num_samples:
        raise ConfigError(
            f"{KEY_ENQUEUE}: {total} configurations to try first, but num_samples is {cfg.num_samples}"
        )
    return out


def _best_of(item: dict[str, Any], key: str) -> BestOf:
    extra = set(item) - {"best_of", "count"}
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}: unknown key beside best_of (known: best_of, count)")
    ref, count = item["best_of"], item.get("count", 1)
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{key}.best_of: must name a sweep (its directory, study or name), got {ref!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{key}.count: must be an integer >= 1, got {count!r}")
    return BestOf(ref, count, key)


def check(cfg: SweepConfig) -> None:
    """The static checks of ``continue_from`` and ``enqueue`` (no store opened)."""
    if cfg.search.algorithm == "grid" and (cfg.search.continue_from or cfg.search.enqueue):
        key = KEY_FROM if cfg.search.continue_from else KEY_ENQUEUE
        raise ConfigError(f"{key}: not with search=grid (the grid sampler enumerates its own grid)")
    parse_enqueue(cfg)


def plan(cfg: SweepConfig, url: str, launch_dir: str) -> StudyPlan:
    """A new sweep's study in the store at ``url``: the study ``continue_from`` names and the
    configurations ``enqueue`` asks for, found (there, or where a sweep directory says); nothing
    is written."""
    stores: dict[str, Any] = {}
    source = None
    if cfg.search.continue_from:
        source = find_study(cfg.search.continue_from, KEY_FROM, url, launch_dir, stores)
        _same_objective(source, cfg, KEY_FROM)
    configs: list[tuple[dict[str, Any], str]] = []
    for i, item in enumerate(parse_enqueue(cfg)):
        if isinstance(item, BestOf):
            configs += _best_configs(item, cfg, url, launch_dir, stores)
        else:
            configs.append((item, f"{KEY_ENQUEUE}[{i}]"))
    return StudyPlan(url, source, configs)


def _store(url: str, stores: dict[str, Any]) -> Any:
    """The storage at ``url`` (None when its file does not exist), opened once per plan."""
    if url not in stores:
        stores[url] = open_storage(url, create=False)
    return stores[url]


def find_study(ref: str, key: str, url: str, launch_dir: str, stores: dict[str, Any]) -> StudyInfo:
    """The study ``ref`` names: a sweep directory (a path with ``/``), else a study of that name
    in the store at ``url``, else the latest study of the sweep of that name there."""
    if "/" in ref or ref.startswith("~"):
        return _from_directory(ref, key, launch_dir, stores)
    storage = _store(url, stores)
    found = studies(storage, url) if storage is not None else []
    for info in found:
        if info.name == ref:
            return info
    pattern = re.compile(rf"{re.escape(ref)}_\d{{8}}-\d{{6}}(-[0-9a-f]+)?")
    named = [s for s in found if s.sweep == ref or pattern.fullmatch(s.name)]
    if named:
        return max(named, key=lambda s: (s.started, s.name))
    names = sorted(s.name for s in found)
    there = f" (studies there: {', '.join(names[-5:])}{', ...' if len(names) > 5 else ''})" if names else ""
    raise ConfigError(f"{key}: no study or sweep named {ref!r} in {shown(url)}{there}")


def _from_directory(ref: str, key: str, launch_dir: str, stores: dict[str, Any]) -> StudyInfo:
    """The study of the sweep in directory ``ref``, where its ``orchestrator.json`` says it is."""
    path = os.path.abspath(os.path.join(launch_dir, os.path.expanduser(ref)))
    try:
        with open(os.path.join(path, _RECORD), encoding="utf-8") as f:
            record = json.load(f)
        name, url = record["experiment"], record.get("study_storage")
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{key}: {path!r} is not a sweep directory (no readable {_RECORD})") from None
    if not url:
        raise ConfigError(f"{key}: the sweep in {path!r} kept no Optuna study (it ran before search.storage)")
    storage = _store(url, stores)
    for info in studies(storage, url) if storage is not None else []:
        if info.name == name:
            run = info.parent_run_id or record.get("parent_run_id")
            return dataclasses.replace(info, parent_run_id=run)
    raise ConfigError(f"{key}: the study {name!r} of {path!r} is not in {shown(url)} any more")


def _listed(objectives: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{metric} {mode}" for metric, mode in objectives)


def _same_objective(info: StudyInfo, cfg: SweepConfig, key: str) -> None:
    """Refuse a study that optimised other objectives than this sweep: another metric or mode, or
    another list of objectives (their metrics and modes, in order)."""
    ours = tuple((o["metric"], o["mode"]) for o in cfg.objectives or ())
    if ours or info.directions > 1:
        theirs = info.objectives or (("?", "?"),) * info.directions
        if theirs != ours:
            what = _listed(theirs) if info.directions > 1 else f"one objective ({info.metric} {info.mode})"
            mine = _listed(ours) if ours else f"one ({cfg.metric} {cfg.mode})"
            raise ConfigError(f"{key}: {info.name!r} optimised {what}, this sweep {mine}")
        return
    if info.metric is not None and info.metric != cfg.metric:
        raise ConfigError(f"{key}: {info.name!r} optimised {info.metric}, this sweep {cfg.metric}")
    if info.mode is not None and info.mode != cfg.mode:
        raise ConfigError(f"{key}: {info.name!r} wanted {cfg.metric} {info.mode}, this sweep {cfg.mode}")


def _best_configs(
    item: BestOf, cfg: SweepConfig, url: str, launch_dir: str, stores: dict[str, Any]
) -> list[tuple[dict[str, Any], str]]:
    """The ``count`` best complete trials of the study ``item`` names, checked against this space:
    with several objectives, those of its Pareto front, best on the first objective first."""
    import optuna

    info = find_study(item.ref, f"{item.key}.best_of", url, launch_dir, stores)
    _same_objective(info, cfg, f"{item.key}.best_of")
    study = optuna.load_study(study_name=info.name, storage=_store(info.url, stores))
    if info.directions > 1:
        done = list(study.best_trials)
    else:
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    done.sort(key=lambda t: t.values[0] if info.mode == "min" else -t.values[0])
    if not done:
        raise ConfigError(f"{item.key}.best_of: {info.name!r} has no complete trial")
    configs = []
    for t in done[: item.count]:
        origin = f"best of {info.name} (trial {t.number})"
        configs.append((fit_config(t.params, cfg.space, f"{item.key}.best_of: trial {t.number}"), origin))
    if len(done) < item.count:
        which = "trials on its Pareto front" if info.directions > 1 else "complete trials"
        logger.warning("%s: %s has %d %s, not %d", item.key, info.name, len(done), which, item.count)
    return configs


def start_study(storage: Any, name: str, cfg: SweepConfig, plan: StudyPlan) -> int:
    """Create the sweep's study ``name``: the continued study's trials copied in, then the
    configurations to try first enqueued; return how many trials were copied."""
    source, copied = plan.source, 0
    extra = {"continued_from": source.name} if source is not None else {}
    study = create_sweep_study(storage, name, cfg, extra)
    if source is not None:
        copied, left = copy_trials(source, study, cfg.space)
        study.set_user_attr("copied_trials", copied)
        logger.info("search.continue_from: %d trials of %s copied in", copied, source.name)
        if left:
            logger.warning(
                "search.continue_from: %d trials of %s left out (their hyperparameters are not this "
                "sweep's searched ones, or lie outside them)", left, source.name,
            )  # fmt: skip
    for params, origin in plan.configs:
        study.enqueue_trial(params, user_attrs={ATTR_ENQUEUED: origin})
    return copied


def copy_trials(source: StudyInfo, study: Any, space: SearchSpace) -> tuple[int, int]:
    """Copy ``source``'s finished trials into ``study`` with this space's distributions; return
    how many were copied and how many left out (not this space's hyperparameters, or outside)."""
    import optuna
    from optuna.trial import TrialState

    from orchestrator.search import optuna_space  # imports Ray: only when a sweep starts

    dists = optuna_space(space)
    earlier = optuna.load_study(study_name=source.name, storage=open_storage(source.url, create=False))
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    copies, left = [], 0
    for t in earlier.get_trials(deepcopy=False, states=states):
        fits = set(t.params) == set(dists) and all(
            space.searched[n].problem(v) is None for n, v in t.params.items()
        )
        if not fits:
            left += 1
            continue
        copies.append(
            optuna.trial.create_trial(
                state=t.state,
                values=t.values if t.state == TrialState.COMPLETE else None,
                params=t.params,
                distributions=dists,
                user_attrs={**t.user_attrs, ATTR_COPIED: f"{source.name}#{t.number}"},
                intermediate_values=t.intermediate_values,
            )
        )
    study.add_trials(copies)
    return len(copies), left


__all__ = [
    "BestOf",
    "StudyPlan",
    "check",
    "copy_trials",
    "find_study",
    "fit_config",
    "parse_enqueue",
    "plan",
    "start_study",
]
