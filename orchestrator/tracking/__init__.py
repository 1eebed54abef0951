"""MLflow record of a sweep: a parent run per sweep, a child run per trial. The only mlflow importer.

Everything is logged from the driver, but the driver thread only enqueues: a background
writer creates the runs, sends metrics in ``log_batch`` calls (at most 1000 metrics each),
sets tags, ends runs and uploads text artifacts, in the order they were asked for per run.
When the tracking store fails (server down, refused, 5xx, timeout) the writer warns once,
keeps everything in order and retries with backoff; what is still undelivered when the sweep
ends is written to a JSON-lines spool file that ``python -m orchestrator.tracking replay SPOOL``
delivers later, without duplicating a metric step. No run is left RUNNING.

Modules: :mod:`.uri` (parsing tracking URIs; no MLflow), :mod:`.client` (a fail-fast client,
the experiment, retry-or-skip), :mod:`.ops` (operations on runs, their JSON form and
grouping), :mod:`.deliver` (applying an op idempotently), :mod:`.writer` (the background
thread), :mod:`.spool` (the spool file), :mod:`.runs` (handles and open runs),
:mod:`.tracker` (:class:`SweepTracker`), :mod:`.opening` (:class:`StoreOpening`),
:mod:`.reopen` (resuming a sweep's runs), :mod:`.replaying` (``replay`` and its command
line), :mod:`.model` (logging a PyTorch model, loading one's state dict).

The names below are imported from their modules on first use, so importing the package (or
:mod:`.uri` alone, as the preflight checks do) imports no MLflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module of this package that defines it
_HOMES = {
    "GRACE_ENV": "tracker",
    "KEY_TAG": "deliver",
    "NOTE_TAG": "tracker",
    "PARENT_TAG": "deliver",
    "StoreOpening": "opening",
    "SweepTracker": "tracker",
    "group_ops": "ops",
    "is_pending": "runs",
    "log_checkpoint": "model",
    "log_pytorch_model": "model",
    "main": "replaying",
    "prepare_model_logging": "model",
    "replay": "replaying",
    "resolve_tracking_uri": "uri",
    "ui_hint": "uri",
}

__all__ = [
    "GRACE_ENV",
    "KEY_TAG",
    "NOTE_TAG",
    "PARENT_TAG",
    "StoreOpening",
    "SweepTracker",
    "group_ops",
    "is_pending",
    "log_checkpoint",
    "log_pytorch_model",
    "main",
    "prepare_model_logging",
    "replay",
    "resolve_tracking_uri",
    "ui_hint",
]  # the keys of _HOMES; spelled out for static tools

if TYPE_CHECKING:
    from orchestrator.tracking.deliver import KEY_TAG, PARENT_TAG
    from orchestrator.tracking.model import log_checkpoint, log_pytorch_model, prepare_model_logging
    from orchestrator.tracking.opening import StoreOpening
    from orchestrator.tracking.ops import group_ops
    from orchestrator.tracking.replaying import main, replay
    from orchestrator.tracking.runs import is_pending
    from orchestrator.tracking.tracker import GRACE_ENV, NOTE_TAG, SweepTracker
    from orchestrator.tracking.uri import resolve_tracking_uri, ui_hint


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
