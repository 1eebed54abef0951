"""Shared test helpers: running the real command line."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator.schema import register_schemas

register_schemas()  # for the tests that compose configs with Hydra's compose API (as __main__ does)


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without a tracking URI of the caller's, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | extra


def cli(
    cwd, *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    """Run ``python -m orchestrator ARGS`` in ``cwd`` and return the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(cwd, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    """Run ``python -m orchestrator ARGS`` in ``cwd``; assert it exits 0 and return its stdout."""
    proc = cli(cwd, *args, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def start_cli(cwd, *args: str) -> subprocess.Popen:
    """Start ``python -m orchestrator ARGS`` in ``cwd`` (stdout and stderr together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class TrialSink:
    """A :class:`orchestrator.trial.Trial`'s sink for tests: every result, and a copy of each
    checkpoint directory by epoch (under ``root``); :meth:`source` hands the newest back."""

    def __init__(self, root: Path) -> None:
        self.root, self.results, self.checkpoints = root, [], {}

    def __call__(self, result: dict, directory: str | None) -> None:
        self.results.append(dict(result))
        if directory is not None:
            target = self.root / f"epoch{result['epoch']}"
            shutil.copytree(directory, target)
            self.checkpoints[result["epoch"]] = str(target)

    def source(self):
        """The newest checkpoint directory (a context manager), None before any."""
        return contextlib.nullcontext(self.checkpoints[max(self.checkpoints)]) if self.checkpoints else None
