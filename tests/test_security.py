"""Security: secrets are never recorded or printed; no shell strings; checkpoints load weights only."""

from __future__ import annotations

import ast
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import cli, cli_env

from orchestrator.redact import (
    MASK,
    is_secret_key,
    redact,
    redact_assignments,
    redact_overrides,
    redact_yaml,
)

ROOT = Path(__file__).resolve().parents[1]
PROJECT_DIRS = ("orchestrator", "trainables", "analysis", "benchmarks", "scripts", "conf")
SECRET = "s3cr3t-Tok3n-4711"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("token", True),
        ("tracking.token", True),
        ("trainable.hparams.api_key", True),
        ("apiKey", True),
        ("APIKEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("db-password", True),
        ("+tracking.token", True),
        ("github/token", True),
        ("client_secret", True),
        ("credentials", True),
        ("keep", False),
        ("monkey", False),
        ("key_size", False),
        ("max_tokens", False),
        ("token_count", False),
        ("hotkey", False),
        ("secretary", False),
        ("tracking.uri", False),
        ("trainable.hparams.lr", False),
    ],
)
def test_secret_key_rule(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_mapping_overrides_and_text() -> None:
    config = {
        "tracking": {"uri": "http://127.0.0.1:5000", "token": SECRET, "password": None},
        "env": [{"name": "x", "api_key": SECRET}],
        "secrets": {"a": SECRET},
        "keep": 3,
    }
    masked = redact(config)
    assert masked == {
        "tracking": {"uri": "http://127.0.0.1:5000", "token": MASK, "password": None},
        "env": [{"name": "x", "api_key": MASK}],
        "secrets": MASK,
        "keep": 3,
    }
    assert config["tracking"]["token"] == SECRET  # the input is left alone
    assert redact_overrides([f"tracking.token={SECRET}", f"++a.api_key={SECRET}", "num_samples=3"]) == [
        "tracking.token=***",
        "++a.api_key=***",
        "num_samples=3",
    ]
    assert redact_assignments(f"cannot parse 'x.token={SECRET}', y=2") == "cannot parse 'x.token=***', y=2"
    yaml_text = (
        f"tracking:\n  token: {SECRET}\n  uri: null\nsecrets:\n  a: {SECRET}\n  b:\n  - {SECRET}\n"
        f"password: |\n  {SECRET}\nkeep: 1\noverrides:\n- tracking.token={SECRET}\n"
        f"dirname: debug=default,tracking.token={SECRET}\n"
    )
    masked_text = redact_yaml(yaml_text)
    assert SECRET not in masked_text
    assert masked_text == (
        "tracking:\n  token: '***'\n  uri: null\nsecrets: '***'\npassword: '***'\nkeep: 1\n"
        "overrides:\n- tracking.token=***\ndirname: debug=default,tracking.token=***\n"
    )


def test_printed_config_and_errors_hide_secrets(tmp_path: Path) -> None:
    """Hydra's --cfg printouts and every error line mask the token; nothing is started."""
    job = cli(tmp_path, f"tracking.token={SECRET}", "--cfg", "job")
    assert job.returncode == 0, job.stderr
    assert "token: '***'" in job.stdout
    hydra = cli(tmp_path, f"tracking.token={SECRET}", "--cfg", "hydra")
    assert hydra.returncode == 0, hydra.stderr
    assert "- tracking.token=***" in hydra.stdout
    bad_type = cli(tmp_path, "tracking.token=4711")
    bad_syntax = cli(tmp_path, f"tracking.token=[{SECRET}")
    assert bad_type.stderr.strip() == "error: tracking.token: must be a non-empty string, got '***'"
    assert bad_syntax.stderr.strip() == "error: tracking.token: cannot parse the override (value hidden)"
    for proc in (job, hydra, bad_type, bad_syntax):
        assert SECRET not in proc.stdout + proc.stderr and "4711" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_mlflow_params_never_hold_a_secret(tmp_path: Path) -> None:
    """Every params dict the tracker logs is masked on the way in (a real SQLite store)."""
    from orchestrator.tracking import SweepTracker

    db = tmp_path / "mlflow.db"
    tracker = SweepTracker(f"sqlite:///{db}", "security")
    params = {"trainable.hparams.api_key": SECRET, "tracking.token": SECRET, "space.lr": 0.1, "keep": 1}
    tracker.start_sweep("security", params, {}, {})
    tracker.end_sweep("FINISHED")
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        logged = dict(con.execute("SELECT key, value FROM params").fetchall())
    finally:
        con.close()
    masked = {"trainable.hparams.api_key": MASK, "tracking.token": MASK}
    assert logged == {**masked, "space.lr": "0.1", "keep": "1"}
    assert SECRET.encode() not in db.read_bytes()


@pytest.mark.slow
def test_sweep_records_no_secret(tmp_path: Path) -> None:
    """A real one-trial sweep given a token: it is masked in config.yaml and overrides.txt and
    appears nowhere in the MLflow store, the Ray results, Ray's session logs or the output."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "debug=default",
                "num_samples=1",
                "trainable.epochs=2",
                "tracking.log_model=false",
                f"tracking.token={SECRET}",
            ],
            cwd=tmp_path,
            env=cli_env(RAY_TMPDIR=str(ray_tmp)),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert SECRET not in proc.stdout + proc.stderr
        files = [p for p in [*tmp_path.rglob("*"), *ray_tmp.rglob("*")] if p.is_file() and not p.is_symlink()]
        leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
        assert leaked == []
        (config,) = [p for p in tmp_path.rglob("config.yaml") if "mlartifacts" in p.parts]
        (overrides,) = [p for p in tmp_path.rglob("overrides.txt") if "mlartifacts" in p.parts]
        assert "token: '***'" in config.read_text()
        assert "tracking.token=***" in overrides.read_text().splitlines()
        assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "results").is_dir()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _python_files() -> list[Path]:
    return [p for d in PROJECT_DIRS for p in sorted((ROOT / d).rglob("*.py"))]


def _name(node: ast.expr) -> str:
    """``a.b.c`` for an attribute chain, else ''."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_no_shell_strings_and_weights_only_loads() -> None:
    """No shell: no ``shell=True``, no os.system/os.popen, every subprocess command a list;
    every ``torch.load`` passes ``weights_only=True``; nothing binds 0.0.0.0; token auth never off."""
    problems = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "0.0.0.0":
                problems.append(f"{where}:{node.lineno}: binds every interface")
            if isinstance(node, ast.Constant) and node.value == "RAY_AUTH_MODE":  # an env key being set
                problems.append(f"{where}:{node.lineno}: touches Ray's token authentication")
            if not isinstance(node, ast.Call):
                continue
            name, kwargs = _name(node.func), {k.arg: k.value for k in node.keywords}
            shell = kwargs.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}:{node.lineno}: shell=")
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                problems.append(f"{where}:{node.lineno}: {name}")
            if name.startswith("subprocess.") and node.args:
                if isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    problems.append(f"{where}:{node.lineno}: {name} with a command string")
            if name == "torch.load":
                weights_only = kwargs.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
    assert problems == [], "\n".join(problems)
    assert len(_python_files()) > 20  # the scan saw the project


def test_scan_catches_what_it_forbids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan above is not vacuous: a file with each forbidden pattern is flagged."""
    bad = tmp_path / "orchestrator" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import os, subprocess, torch\n"
        "subprocess.run(f'ls {x}', shell=True)\n"
        "os.system('ls')\n"
        "torch.load('m.pt')\n"
        "HOST = '0.0.0.0'\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as failed:
        test_no_shell_strings_and_weights_only_loads()
    text = str(failed.value)
    for what in ("shell=", "os.system", "command string", "weights_only", "every interface"):
        assert what in text
