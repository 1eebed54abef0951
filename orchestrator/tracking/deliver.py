"""Applying one op to the store, so that applying it again changes nothing.

A retry can repeat an op the store already applied (the reply was lost). A ``create`` that may
have happened first looks its run up by the handle tag (:data:`KEY_TAG`) every run carries; a
metrics batch that may have been logged first drops the values already in the run's history.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

from orchestrator.tracking.ops import _Op

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "orchestrator.run_key"  # the run's client-side handle: makes a retried create idempotent


class _Deliverer:
    """Applies ops to the store. Idempotent where a retry could repeat an op: a create that may
    have happened looks its run up by its handle tag; metrics that may have been logged are
    compared with the run's history (key, step, timestamp) first."""

    def __init__(self, client: MlflowClient, experiment_id: str, resolved: dict[str, str]) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.resolved = resolved  # handle -> run id
        self.fresh: set[str] = set()  # runs this deliverer created: nothing to deduplicate there

    def run_id(self, handle: str) -> str:
        """The store's id of the run ``handle`` names; a permanent MLflow error if it was never created."""
        try:
            return self.resolved[handle]
        except KeyError:
            message = f"run {handle} was never created"
            raise MlflowException(message, error_code="RESOURCE_DOES_NOT_EXIST") from None

    def deliver(self, op: _Op) -> None:
        """Apply ``op``; raises what the store raised (the caller judges: retry or skip)."""
        data = op.data
        if op.kind == "create":
            self._create(op)
        elif op.kind == "batch":
            run_id = self.run_id(op.run)
            metrics = data.get("metrics") or []
            if metrics and op.uncertain and run_id not in self.fresh:
                metrics = self._unlogged(run_id, metrics)
            params = [Param(k, v) for k, v in (data.get("params") or {}).items()]
            tags = [RunTag(k, v) for k, v in (data.get("tags") or {}).items()]
            entities = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
            self.client.log_batch(run_id, metrics=entities, params=params, tags=tags)
        elif op.kind == "end":
            self.client.set_terminated(self.run_id(op.run), status=data["status"], end_time=data.get("end"))
        elif op.kind == "artifact":
            self._upload(self.run_id(op.run), data["path"], data["data"])
        else:
            raise ValueError(f"unknown tracking operation {op.kind!r}")

    def _create(self, op: _Op) -> None:
        """Create the run ``op`` names once: not again when resolved, nor when a tagged run is found."""
        if op.run in self.resolved:
            return
        data = op.data
        if op.uncertain:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{op.run}'", max_results=1
            )
            if found:
                self.resolved[op.run] = found[0].info.run_id
                return
        tags = {**data["tags"], KEY_TAG: op.run}
        if data.get("parent"):
            tags[PARENT_TAG] = self.run_id(data["parent"])
        run = self.client.create_run(
            self.experiment_id, start_time=data.get("start"), tags=tags, run_name=data.get("name")
        )
        self.resolved[op.run] = run.info.run_id
        self.fresh.add(run.info.run_id)

    def _unlogged(self, run_id: str, metrics: list[list[Any]]) -> list[list[Any]]:
        """The metrics not already in the run's history (same key, step and timestamp)."""
        seen: set[tuple[str, int, int]] = set()
        for key in {m[0] for m in metrics}:
            seen.update((key, h.step, h.timestamp) for h in self.client.get_metric_history(run_id, key))
        return [m for m in metrics if (m[0], m[3], m[2]) not in seen]

    def _upload(self, run_id: str, path: str, data: bytes) -> None:
        """Store ``data`` as the run's artifact ``path``; through a server's proxy, in one bounded PUT."""
        directory, name = posixpath.split(path)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            with open(local, "wb") as f:
                f.write(data)
            repo = self.client._tracking_client._get_artifact_repo(run_id)
            if not isinstance(repo, HttpArtifactRepository):
                repo.log_artifact(local, directory or None)
                return
            # the server's artifact proxy: one PUT, sent once (the repository's own retries take minutes)
            timeout = getattr(self.client._tracking_client.store, "timeout_s", 30)
            endpoint = posixpath.join("/", *((directory, name) if directory else (name,)))
            with open(local, "rb") as f:
                resp = http_request(
                    repo._host_creds,
                    endpoint,
                    "PUT",
                    data=f,
                    max_retries=0,
                    backoff_factor=0,
                    backoff_jitter=0,
                    timeout=timeout,
                    extra_headers={"Content-Type": _mime(name)},
                )
            augmented_raise_for_status(resp)


def _mime(name: str) -> str:
    """The content type of an uploaded artifact, by its extension (text unless PNG or JSON)."""
    if name.endswith(".png"):
        return "image/png"
    if name.endswith((".json",)):
        return "application/json"
    return "text/plain"
