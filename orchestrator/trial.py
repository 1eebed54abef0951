"""The ``Trial`` a user's train function receives: seed, budget, device, hyperparameters, and
the calls that report epochs and save and restore checkpoints.

A train function is ``fn(hp, trial)``. Before it is called, ``random``, numpy and torch are
seeded with ``trial.seed``; a restart calls it again, from scratch, with a new seed and the
next ``trial.attempt``. :meth:`Trial.report` sends one epoch's metrics with what the framework
fills in (``epoch``, ``attempt``, ``seed``, and from a watched model ``lr``, ``grad_norm``,
``dead_frac``); its ``checkpoint`` is saved every ``checkpoint_every`` epochs and at the last.
:meth:`Trial.restore` loads this attempt's checkpoint (``weights_only=True``) and returns its
epoch; a checkpoint of an older attempt is refused (the trial starts over).

The trial does not talk to Ray itself: a ``sink`` takes each result (and the directory of its
checkpoint, if any) and a ``source`` hands the checkpoint to restore, so the same object runs
under Ray Tune (:mod:`orchestrator.runner`) and in this process (``check=true``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from orchestrator.contract import CHECKPOINT_FILE
from orchestrator.watch import Watch

logger = logging.getLogger(__name__)

#: Version of the checkpoint file :meth:`Trial.report` writes.
CHECKPOINT_VERSION = 2

Sink = Callable[[dict[str, Any], "str | None"], None]
Source = Callable[[], "ContextManager[str] | None"]

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
        trial.unwatch()


class Trial:
    """One attempt of one trial, as the user's train function sees it.

    Attributes:
        seed: the attempt's seed (``random``, numpy and torch were seeded with it).
        attempt: 0 for the first attempt, +1 per restart.
        epochs: the budget of one attempt.
        device: the GPU Ray gave the trial, else the CPU.
        hp: the trial's hyperparameters (searched and fixed).
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
    ) -> None:
        self.seed, self.attempt, self.epochs = int(seed), int(attempt), int(epochs)
        self.device = torch.device(device)
        self.hp = dict(hp)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.reported = 0  # results sent (replays included)
        self.last: dict[str, Any] = {}
        self.restored: dict[str, Any] = {}  # the values :meth:`restore` loaded
        self._sink, self._source = sink, source
        self._watch: Watch | None = None

    def watch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Measure ``grad_norm`` (needs the optimizer), ``dead_frac`` and ``lr`` for each report."""
        self.unwatch()
        self._watch = Watch(model, optimizer)

    def unwatch(self) -> None:
        """Stop measuring (the hooks are removed)."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def report(self, epoch: int, checkpoint: Mapping[str, Any] | None = None, **metrics: Any) -> None:
        """Report epoch ``epoch`` (1-based within the attempt) with ``metrics``.

        ``checkpoint`` maps names to objects with ``state_dict()`` (model, optimizer, LR
        scheduler) or to tensors and plain values; it is saved on every ``checkpoint_every``-th
        epoch and the last. Values the user reports win over the ones the framework fills in.
        """
        result = {name: _plain(value) for name, value in metrics.items()}
        if self._watch is not None:
            for name, value in self._watch.take().items():
                result.setdefault(name, value)
        result.update(epoch=_plain(epoch), attempt=self.attempt, seed=self.seed)
        due = isinstance(epoch, int) and (epoch % self.checkpoint_every == 0 or epoch >= self.epochs)
        if checkpoint is not None and due:
            state = {name: _state_of(name, obj) for name, obj in checkpoint.items()}
            if self._watch is not None and self._watch.example is not None:
                state.setdefault("example_input", self._watch.example)
            with tempfile.TemporaryDirectory() as tmp:
                saved = {
                    "version": CHECKPOINT_VERSION,
                    "attempt": self.attempt,
                    "seed": self.seed,
                    "epoch": epoch,
                    "metrics": result,
                    "state": state,
                }
                torch.save(saved, os.path.join(tmp, CHECKPOINT_FILE))
                self._send(result, tmp)
        else:
            self._send(result, None)

    def restore(self, **objects: Any) -> int:
        """Load this attempt's checkpoint into ``objects`` (by the names they were saved under);
        return its epoch, or 0 when there is none to continue from.

        A checkpoint of an older attempt or another seed is refused (0: the attempt starts over).
        The checkpoint's epoch is reported again, marked ``replayed`` (the driver skips it when
        it has it). The saved values are in :attr:`restored` afterwards.
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
        found = self._source() if self._source is not None else None
        if found is None:
            return None
        with found as directory:
            path = os.path.join(directory, CHECKPOINT_FILE)
            return torch.load(path, map_location=self.device, weights_only=True)

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
