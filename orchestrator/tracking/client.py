"""A tracking client whose requests fail fast, and how a store error is judged: retry it or skip it.

The writer does its own retrying, in order; MLflow's REST client would retry a refused
connection for minutes first. Errors that name a bad request are permanent (the op is skipped
with a warning); anything else (unreachable, 5xx, 408, 429, timeouts) is worth retrying.
"""

from __future__ import annotations

import json
import os
import time

import requests
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.client import TrackingServiceClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.proto_json_utils import parse_dict
from mlflow.utils.rest_utils import http_request, verify_rest_response

from orchestrator.errors import ConfigError
from orchestrator.tracking.database import deleted_experiment
from orchestrator.tracking.uri import directory_lock, is_http, sqlite_path

#: Store errors that retrying cannot fix: the operation is skipped with a warning.
_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
    }
)


class _BoundedRestStore(RestStore):
    """A REST store that sends each request once with a short timeout (MLflow's default retries
    a refused connection for minutes); only the writer's client uses it, no setting changes."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        super().__init__(lambda: get_default_host_creds(uri))
        self.timeout_s = timeout_s

    def _call_endpoint(
        self, api, json_body=None, endpoint=None, retry_timeout_seconds=None, response_proto=None
    ):  # type: ignore[no-untyped-def]  # noqa: E501
        """Send the request once (no retries) with this store's timeout; parse the reply as MLflow does."""
        info = self._V3_METHOD_TO_INFO if api in self._V3_APIS else self._METHOD_TO_INFO
        self._validate_workspace_support_if_specified()
        default_endpoint, method = info[api]
        endpoint = endpoint or default_endpoint
        body = json.loads(json_body) if json_body is not None else None
        response = http_request(
            self.get_host_creds(),
            endpoint,
            method,
            max_retries=0,
            backoff_factor=0,
            backoff_jitter=0,
            timeout=self.timeout_s,
            **({"params": body} if method == "GET" else {"json": body}),
        )
        response = verify_rest_response(response, endpoint)
        response_proto = response_proto or api.Response()
        if response.status_code == 204:
            return response_proto
        parse_dict(js_dict=json.loads(response.text), message=response_proto)
        return response_proto


class _BoundedTrackingClient(TrackingServiceClient):
    """A tracking service client that talks to the server through a :class:`_BoundedRestStore`."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        self._bounded = _BoundedRestStore(uri, timeout_s)
        super().__init__(uri)

    @property
    def store(self) -> RestStore:  # type: ignore[override]
        """The bounded store, in place of the one MLflow would build from the URI."""
        return self._bounded


def _client(uri: str, timeout_s: float) -> MlflowClient:
    """An MlflowClient; for an HTTP server, one whose requests are sent once with ``timeout_s``.

    A new SQLite store is made (MLflow's migrations) by one process at a time: two drivers running
    them at once on one file fail (``table _alembic_tmp_tags already exists``).
    """
    with directory_lock(sqlite_path(uri)):  # MLflow creates (or migrates) a SQLite store here, at once
        client = MlflowClient(tracking_uri=uri)
    if is_http(uri):
        client._tracking_client = _BoundedTrackingClient(uri, timeout_s)
    return client


def open_experiment(client: MlflowClient, uri: str, name: str, attempts: int = 5) -> str:
    """The id of the active experiment ``name``, created if it is missing; a local SQLite store
    keeps the new experiment's artifacts beside its database (``mlartifacts``).

    Two sweeps opening one store at once both end up in the one experiment: the loser of the
    create race (``RESOURCE_ALREADY_EXISTS``) looks it up again, and a transient error (SQLite's
    "database is locked") is retried up to ``attempts`` times, a second apart. An experiment of
    that name that was deleted (``mlflow experiments delete``) is not restored behind the user's
    back: ConfigError naming ``tracking.experiment`` says how to restore it or to choose another
    name. Raises ConfigError naming ``tracking.uri`` when the store cannot be reached.
    """
    for attempt in range(attempts):
        try:
            return _open_or_create(client, uri, name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS" and attempt + 1 < attempts:
                continue  # another sweep created it between our lookup and our create
            if not _is_transient(exc):
                raise
            if attempt + 1 == attempts:
                raise ConfigError(f"tracking.uri: MLflow at {uri} is unreachable ({_short(exc)})") from None
            time.sleep(1.0)
    raise AssertionError("unreachable")  # the loop returns or raises


def _open_or_create(client: MlflowClient, uri: str, name: str) -> str:
    """One lookup of ``name`` (refusing a deleted experiment), else one create."""
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise ConfigError(deleted_experiment(name, found.experiment_id, uri))
    if found is not None:
        return found.experiment_id
    location = None
    db_path = sqlite_path(uri)
    if db_path is not None:
        location = "file://" + os.path.join(os.path.dirname(db_path), "mlartifacts")
    return client.create_experiment(name, artifact_location=location)


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: the store could not be reached or failed on its side (5xx, 408, 429, timeouts).

    An MLflow error that names a bad request (invalid value, missing run, ...) is permanent.
    """
    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT_CODES
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        return code >= 500 or code in (408, 429)
    return True


def _short(exc: BaseException) -> str:
    """The gist of a store error: connection refused / timed out, else its first 160 characters."""
    text = " ".join(str(exc).split())
    for marker, gist in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Failed to establish", "cannot connect"),
        ("RemoteDisconnected", "connection closed"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection aborted"),
    ):
        if marker in text:
            return gist
    return text if len(text) <= 160 else text[:157] + "..."
