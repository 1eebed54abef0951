"""Measurement hook for ``benchmarks.overhead``: loaded by every Python process of a measured command.

The benchmark puts this directory on ``PYTHONPATH`` and sets ``BENCH_TIMING_DIR``; Python then
imports this file at start-up in the command and in every process it starts (Ray workers too).
Nothing in the project is edited: when a target module is first imported, its functions are
wrapped right after the module has executed. Each process appends JSON lines to
``$BENCH_TIMING_DIR/<pid>.jsonl``:

- ``{"k": "epoch", "t1": wall clock at the end, "s": seconds}`` per ``Trainer.train_epoch`` call
  (the training work every variant does);
- ``{"k": "first_result", "t": wall clock}`` when the driver first hands a result to Ray Tune's
  callbacks (``CallbackList.on_trial_result``), once;
- ``{"k": "phase", "name": ..., "s": seconds, "t1": wall clock at the end}`` per call of the
  functions named by ``BENCH_PHASES`` (``module:function;module:Class.method;...``);
- ``{"k": "results", "n": n}`` at exit: results the driver handed to Tune's callbacks;
- ``{"k": "timed", "name": "Class.method", "s": seconds, "calls": n, "results": n}`` at exit: time in
  the public methods (and ``__init__``) of the classes named by ``BENCH_TIME_CLASSES``
  (``module:Class;...``; calls from the main thread only; a call made inside another timed call
  counts for the outer one only).

Without ``BENCH_TIMING_DIR`` it does nothing.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import json
import os
import sys
import threading
import time

_DIR = os.environ.get("BENCH_TIMING_DIR")
_CLASSES: dict[str, list[str]] = {}
for _item in filter(None, os.environ.get("BENCH_TIME_CLASSES", "").split(";")):
    _module, _, _cls = _item.partition(":")
    _CLASSES.setdefault(_module, []).append(_cls)
_PHASES: dict[str, list[str]] = {}
for _item in filter(None, os.environ.get("BENCH_PHASES", "").split(";")):
    _module, _, _name = _item.partition(":")
    _PHASES.setdefault(_module, []).append(_name)
_TARGETS = {"trainables.trainer", "ray.tune.callback", *_CLASSES, *_PHASES}
_timed: dict[str, list[float]] = {}  # "Class.method" -> [seconds, calls]
_state = {"depth": 0, "results": 0, "first": False}
_MAIN = threading.main_thread().ident  # only the driver's own thread counts (not a writer thread)


def _write(record: dict) -> None:
    with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def _wrap_epoch(fn):
    @functools.wraps(fn)
    def train_epoch(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        _write({"k": "epoch", "t1": time.time(), "s": time.perf_counter() - start})
        return out

    return train_epoch


def _wrap_result(fn):
    @functools.wraps(fn)
    def on_trial_result(*args, **kwargs):
        if not _state["first"]:
            _state["first"] = True
            _write({"k": "first_result", "t": time.time()})
        _state["results"] += 1
        return fn(*args, **kwargs)

    return on_trial_result


def _wrap_timed(name: str, fn):
    slot = _timed.setdefault(name, [0.0, 0])

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        if _state["depth"] or threading.get_ident() != _MAIN:
            return fn(*args, **kwargs)
        _state["depth"] = 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            slot[0] += time.perf_counter() - start
            slot[1] += 1
            _state["depth"] = 0

    return timed


def _wrap_phase(label: str, fn):
    @functools.wraps(fn)
    def phase(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _write({"k": "phase", "name": label, "s": time.perf_counter() - start, "t1": time.time()})

    return phase


def _patch(name: str, module) -> None:
    for label in _PHASES.get(name, []):
        owner_name, _, attr = label.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        if owner is not None and callable(getattr(owner, attr, None)):  # a missing name is skipped
            setattr(owner, attr, _wrap_phase(label, getattr(owner, attr)))
    if name == "trainables.trainer":
        module.Trainer.train_epoch = _wrap_epoch(module.Trainer.train_epoch)
    if name == "ray.tune.callback":
        module.CallbackList.on_trial_result = _wrap_result(module.CallbackList.on_trial_result)
    for cls_name in _CLASSES.get(name, []):
        cls = getattr(module, cls_name, None)
        if cls is None:
            continue
        base = getattr(sys.modules.get("ray.tune.callback"), "Callback", object)
        for attr in dir(cls):  # public methods and __init__, inherited ones too, but not Callback's no-ops
            fn = getattr(cls, attr)
            public = attr == "__init__" or not attr.startswith("_")
            if public and callable(fn) and not isinstance(fn, type) and fn is not getattr(base, attr, None):
                setattr(cls, attr, _wrap_timed(f"{cls_name}.{attr}", fn))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds a target module with the other finders and patches it once it has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, execute = spec.loader, spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _patch(fullname, module)

        loader.exec_module = exec_module
        return spec


def _dump() -> None:
    if _state["results"]:
        _write({"k": "results", "n": _state["results"]})
    for name, (seconds, calls) in _timed.items():
        _write({"k": "timed", "name": name, "s": seconds, "calls": calls, "results": _state["results"]})


if _DIR:
    sys.meta_path.insert(0, _Finder())
    atexit.register(_dump)
