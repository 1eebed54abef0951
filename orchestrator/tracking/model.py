"""Logging a trained PyTorch model to a run of the record (and the Model Registry), from a subprocess.

Both functions import ``mlflow.pytorch`` and so torch: they run in the export subprocess
(:mod:`orchestrator.export`) or a worker, never in the driver.
"""

from __future__ import annotations

import os
from typing import Any


def log_pytorch_model(
    uri: str,
    run_id: str,
    model: Any,
    input_example: Any,
    *,
    registered_name: str | None = None,
    tags: dict[str, str] | None = None,
    code_paths: list[str] | None = None,
) -> str:
    """Log a PyTorch model (with an input example, hence a signature) to ``run_id``; return its URI.

    With ``registered_name`` the model is also registered in the Model Registry. The model's
    code (``code_paths``: a package directory or a module file) travels with it, so it loads
    where that code is not installed; its requirements are MLflow's defaults for the flavour
    (torch, cloudpickle at the installed versions; inferring them costs ~10 s). Imports
    ``mlflow.pytorch`` (and so torch): call it from a worker or an export subprocess.
    """
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=input_example,
            registered_model_name=registered_name,
            tags=tags or None,
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
            code_paths=code_paths or None,
        )
    return info.model_uri


def log_checkpoint(uri: str, run_id: str, path: str) -> str:
    """Log the checkpoint file ``path`` as the run's artifact ``checkpoint/<name>``; return its URI."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    client.log_artifact(run_id, path, "checkpoint")
    return f"runs:/{run_id}/checkpoint/{os.path.basename(path)}"


def prepare_model_logging(uri: str) -> None:
    """Do now what :func:`log_pytorch_model` does first: import MLflow's torch flavour, open the store.

    Only a speed-up: a store that cannot be opened here fails again, with its message, when the
    model is logged.
    """
    import mlflow
    import mlflow.pytorch  # noqa: F401 - the import is the warm-up

    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception:  # noqa: BLE001, S110 - see the docstring
        pass


def load_model_state(model_uri: str, tracking_uri: str | None) -> dict[str, Any]:
    """The state dict of the PyTorch model at ``model_uri`` (``models:/name/version``,
    ``runs:/id/model``) in the store at ``tracking_uri`` (its registry too), on the CPU.

    The model's files are downloaded to a temporary directory, removed afterwards. Sets this
    process's tracking and registry URIs (a ``models:/`` URI is resolved in the registry).
    Imports ``mlflow.pytorch`` (and so torch): call it from a worker or a subprocess.
    """
    import tempfile

    import mlflow
    import mlflow.artifacts
    import mlflow.pytorch

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per trial in the logs
    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="init-from-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
        )
        model = mlflow.pytorch.load_model(local, map_location="cpu")
        return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
