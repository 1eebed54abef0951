"""The ``Trial`` a user's train function receives: seed, budget, device, hyperparameters, and
the calls that report epochs, save and restore checkpoints, and warm-start a model.

A train function is ``fn(hp, trial)``. Before it is called, ``random``, numpy and torch are
seeded with ``trial.seed``; a restart calls it again, from scratch, with a new seed and the
next ``trial.attempt``. :meth:`Trial.report` sends one epoch's metrics with what the framework
fills in (``epoch``, ``attempt``, ``seed``, and from a watched model ``lr``, ``grad_norm``,
``dead_frac``); its ``checkpoint`` is saved every ``checkpoint_every`` epochs, at the epochs
where the scheduler may pause the trial (``checkpoint_at``) and at the last.
:meth:`Trial.restore` loads this attempt's checkpoint (``weights_only=True``) and returns its
epoch; a checkpoint of an older attempt is refused (the trial starts over). A checkpoint may
carry files of the user's framework next to ``checkpoint.pt`` (``report(files=...)``, e.g. a
Lightning checkpoint); :meth:`Trial.restore` hands them back in :attr:`Trial.restored_files`.
:meth:`Trial.init_weights` loads the sweep's ``trainable.init_from`` into a freshly built model
wherever names and shapes match (:mod:`orchestrator.warmstart`), on every attempt.

The trial does not talk to Ray itself: a ``sink`` takes each result (and the directory of its
checkpoint, if any) and a ``source`` hands the checkpoint to restore, so the same object runs
under Ray Tune (:mod:`orchestrator.runner`) and in this process (``check=true``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from orchestrator.contract import CHECKPOINT_FILE
from orchestrator.warmstart import InitResult, init_model
from orchestrator.watch import Watch

logger = logging.getLogger(__name__)

#: Version of the checkpoint file :meth:`Trial.report` writes.
CHECKPOINT_VERSION = 2

Sink = Callable[[dict[str, Any], "str | None"], None]
Source = Callable[[], "ContextManager[str] | None"]
#: Writes one file of a checkpoint at the path it is given.
FileWriter = Callable[[str], Any]

_current: list[Trial] = []


def current() -> Trial | None:
    """The trial whose train function is running in this process (None outside one)."""
    return _current[-1] if _current else None


@contextlib.contextmanager
def active(trial: Trial) -> Iterator[Trial]:
    """Make ``trial`` :func:`current` while the block runs."""
    _current.append(trial)
    try:
        yield trial
    finally:
        _current.remove(trial)
        trial.close()


class Trial:
    """One attempt of one trial, as the user's train function sees it.

    Attributes:
        seed: the attempt's seed (``random``, numpy and torch were seeded with it).
        attempt: 0 for the first attempt, +1 per restart.
        epochs: the budget of one attempt.
        device: the GPU Ray gave the trial, else the CPU.
        hp: the trial's hyperparameters (searched and fixed).
        init_from: the warm start's source (``trainable.init_from``), None without one.
    """

    def __init__(
        self,
        *,
        seed: int,
        attempt: int,
        epochs: int,
        hp: Mapping[str, Any],
        sink: Sink,
        source: Source | None = None,
        device: torch.device | str = "cpu",
        checkpoint_every: int = 1,
        init_from: Mapping[str, Any] | None = None,
        checkpoint_at: Iterable[int] = (),
    ) -> None:
        self.seed, self.attempt, self.epochs = int(seed), int(attempt), int(epochs)
        self.device = torch.device(device)
        self.hp = dict(hp)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.checkpoint_at = frozenset(int(e) for e in checkpoint_at)  # where the scheduler may pause
        self.reported = 0  # results sent (replays included)
        self.last: dict[str, Any] = {}
        self.restored: dict[str, Any] = {}  # the values :meth:`restore` loaded
        self.restored_files: dict[str, str] = {}  # name -> path of the files :meth:`restore` found
        self._sink, self._source = sink, source
        self._watch: Watch | None = None
        self._files_dir: tempfile.TemporaryDirectory[str] | None = None
        self._init = dict(init_from) if init_from else None
        self._init_counts: dict[str, int] = {}  # sent with the next result

    @property
    def init_from(self) -> str | None:
        """The warm start's source (a path or an MLflow model URI), None without one."""
        return self._init["source"] if self._init else None

    def init_weights(self, model: torch.nn.Module) -> InitResult:
        """Load the sweep's ``trainable.init_from`` into ``model`` where names and shapes match;
        return what was loaded and skipped (nothing without a source).

        Call it after building (and so seeding the initialisation of) the model and before
        :meth:`restore`: the tensors not loaded keep this attempt's seeded values. The counts
        go with the next report as ``init_loaded`` and ``init_skipped``.

        Raises:
            orchestrator.warmstart.InitError: the source cannot be read or none of its tensors fits.
        """
        if self._init is None:
            return InitResult(None, (), tuple(model.state_dict()))
        result = init_model(model, self._init)
        self._init_counts = result.counts()
        logger.info(
            "warm start from %s: %d tensors loaded, %d skipped", result.source, *result.counts().values()
        )
        return result

    def watch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        step_hook: bool = True,
    ) -> Watch:
        """Measure ``grad_norm`` (needs the optimizer), ``dead_frac`` and ``lr`` for each report.

        ``step_hook=False`` leaves the optimizer's steps uncounted: the caller counts each step
        with the returned watch's :meth:`~orchestrator.watch.Watch.add_step` once its gradients
        are computed (a framework whose ``step`` runs the backward pass in a closure).
        """
        self.unwatch()
        self._watch = Watch(model, optimizer, step_hook=step_hook)
        return self._watch

    def unwatch(self) -> None:
        """Stop measuring (the hooks are removed)."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def close(self) -> None:
        """Stop measuring and delete the files :meth:`restore` copied out."""
        self.unwatch()
        if self._files_dir is not None:
            self._files_dir.cleanup()
            self._files_dir, self.restored_files = None, {}

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether :meth:`report` saves a checkpoint at ``epoch``: every ``checkpoint_every``-th
        epoch, the epochs of ``checkpoint_at`` (where the scheduler may pause the trial) and the
        last of the budget."""
        if not isinstance(epoch, int):
            return False
        return epoch % self.checkpoint_every == 0 or epoch in self.checkpoint_at or epoch >= self.epochs

    def report(
        self,
        epoch: int,
        checkpoint: Mapping[str, Any] | None = None,
        files: Mapping[str, FileWriter] | None = None,
        **metrics: Any,
    ) -> None:
        """Report epoch ``epoch`` (1-based within the attempt) with ``metrics``.

        ``checkpoint`` maps names to objects with ``state_dict()`` (model, optimizer, LR
        scheduler) or to tensors and plain values; it is saved on every ``checkpoint_every``-th
        epoch and the last (:meth:`checkpoint_due`). ``files`` maps file names to writers called
        with the path to write, in the same directory, on the same epochs (``checkpoint.pt`` then
        holds ``checkpoint`` or nothing but the epoch and its metrics). Values the user reports
        win over the ones the framework fills in.
        """
        result = {name: _plain(value) for name, value in metrics.items()}
        if self._watch is not None:
            for name, value in self._watch.take().items():
                result.setdefault(name, value)
        result.update(epoch=_plain(epoch), attempt=self.attempt, seed=self.seed)
        result.update(self._init_counts)
        self._init_counts = {}
        if (checkpoint is not None or files) and self.checkpoint_due(epoch):
            self._save(result, checkpoint or {}, files or {})
        else:
            self._send(result, None)

    def _save(
        self, result: dict[str, Any], checkpoint: Mapping[str, Any], files: Mapping[str, FileWriter]
    ) -> None:
        """Write the checkpoint directory (``checkpoint.pt`` and ``files``) and send it with ``result``."""
        for name in files:
            if name == CHECKPOINT_FILE or not name or os.path.basename(name) != name or name.startswith("."):
                raise ValueError(
                    f"checkpoint: a file needs a plain name other than {CHECKPOINT_FILE}; got {name=}"
                )
        state = {name: _state_of(name, obj) for name, obj in checkpoint.items()}
        if self._watch is not None and self._watch.example is not None:
            state.setdefault("example_input", self._watch.example)
        with tempfile.TemporaryDirectory() as tmp:
            saved = {
                "version": CHECKPOINT_VERSION,
                "attempt": self.attempt,
                "seed": self.seed,
                "epoch": result["epoch"],
                "metrics": result,
                "state": state,
            }
            torch.save(saved, os.path.join(tmp, CHECKPOINT_FILE))
            for name, write in files.items():
                write(os.path.join(tmp, name))
            self._send(result, tmp)

    def restore(self, **objects: Any) -> int:
        """Load this attempt's checkpoint into ``objects`` (by the names they were saved under);
        return its epoch, or 0 when there is none to continue from.

        A checkpoint of an older attempt or another seed is refused (0: the attempt starts over).
        The checkpoint's epoch is reported again, marked ``replayed`` (the driver skips it when
        it has it). The saved values are in :attr:`restored` afterwards, and the checkpoint's
        other files (``report(files=...)``) in :attr:`restored_files`, copied to a directory kept
        until :meth:`close`.
        """
        state = self._load()
        if state is None:
            return 0
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint: version {state.get('version')!r} is not {CHECKPOINT_VERSION}")
        if state.get("attempt") != self.attempt or state.get("seed") != self.seed:
            logger.warning(
                "ignoring a checkpoint of attempt %s seed %s (this is attempt %s seed %s)",
                state.get("attempt"),
                state.get("seed"),
                self.attempt,
                self.seed,
            )
            return 0
        saved = state["state"]
        for name, obj in objects.items():
            if obj is None:
                continue
            if name not in saved:
                raise ValueError(
                    f"checkpoint: has no {name!r} (saved: {', '.join(sorted(saved)) or 'nothing'})"
                )
            obj.load_state_dict(saved[name])
        self.restored = saved
        self._send({**state["metrics"], "replayed": True}, None)
        logger.info("resumed at epoch %d from checkpoint", state["epoch"])
        return int(state["epoch"])

    def _load(self) -> dict[str, Any] | None:
        """The checkpoint's content, its other files copied out when it is this attempt's."""
        found = self._source() if self._source is not None else None
        if found is None:
            return None
        with found as directory:
            path = os.path.join(directory, CHECKPOINT_FILE)
            state = torch.load(path, map_location=self.device, weights_only=True)
            if state.get("attempt") == self.attempt and state.get("seed") == self.seed:
                self._copy_files(directory)
            return state

    def _copy_files(self, directory: str) -> None:
        """Copy the checkpoint's files other than ``checkpoint.pt`` out of ``directory``."""
        others = sorted(n for n in os.listdir(directory) if n != CHECKPOINT_FILE)
        if not others:
            return
        if self._files_dir is None:
            self._files_dir = tempfile.TemporaryDirectory(prefix="trial-files-")
        self.restored_files = {}
        for name in others:
            target = os.path.join(self._files_dir.name, name)
            source = os.path.join(directory, name)
            (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, target)
            self.restored_files[name] = target

    def _send(self, result: dict[str, Any], directory: str | None) -> None:
        self._sink(result, directory)
        self.reported += 1
        self.last = result


def _plain(value: Any) -> Any:
    """A one-element tensor or numpy scalar as a Python number; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _state_of(name: str, obj: Any) -> Any:
    """What a checkpoint keeps of ``obj``: its ``state_dict()``, or the value itself when that
    loads with ``weights_only=True`` (tensors, numbers, strings, lists and dicts of them)."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    if _storable(obj):
        return obj
    raise TypeError(
        f"checkpoint: {name!r} ({type(obj).__name__}) cannot be saved: give an object with "
        "state_dict() or tensors, numbers and strings"
    )


def _storable(obj: Any) -> bool:
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_storable(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _storable(v) for k, v in obj.items())
    return False
