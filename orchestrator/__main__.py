"""Entry point: ``python -m orchestrator [hydra overrides]`` (also the ``orchestrator`` command).

Configuration problems of any kind (an unknown group option or key, a wrong type or range,
a bad override, a missing data directory, an unwritable storage path, resources the cluster
lacks) print one ``error: <key>: <problem>`` line and exit with code 2, before Ray starts
where they can be known then (orchestrator/preflight.py). Values of secret-looking keys
(orchestrator/redact.py) are masked in the recorded config and overrides, in error lines and
in Hydra's ``--cfg``/``--info`` printouts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import conf
from orchestrator.config import known_keys, load_config
from orchestrator.errors import ConfigError, printable
from orchestrator.preemption import EXIT_PREEMPTED, latest_unfinished, preempted
from orchestrator.preemption import install as install_preemption
from orchestrator.preflight import preflight, storage_dir
from orchestrator.redact import is_secret_key, redact, redact_assignments, redact_overrides, redact_yaml
from orchestrator.schema import register_schemas
from orchestrator.userconf import file_problem, with_origin

logger = logging.getLogger("orchestrator")
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl+C
EXIT_FAILED = 1  # the sweep ran, but every trial failed
register_schemas()  # conf/ takes every key and default from the schemas (orchestrator/schema.py)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    _STARTED.append(True)  # composition is over: from here on, only our own errors are config errors
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
        sweep_cfg = load_config(data)  # type: ignore[arg-type]
        # resume=auto: an unfinished sweep of this name resumes with its own recorded config (its
        # files, e.g. a prior's, are not this command's to check: it stored what it read)
        unfinished = _unfinished(sweep_cfg) if _AUTO and not sweep_cfg.check else None
        storage = preflight(sweep_cfg, os.getcwd()) if unfinished is None else ""
        if sweep_cfg.check:
            from orchestrator.check import check  # imports torch and the user's code

            sys.exit(check(sweep_cfg, os.getcwd()))
        if sweep_cfg.tracking.token is not None:
            os.environ["MLFLOW_TRACKING_TOKEN"] = sweep_cfg.tracking.token
        from orchestrator.sweep import resume, run  # imports Ray: only once the config is known good

        if unfinished is not None:
            print(f"resume=auto: resuming {unfinished}", flush=True)
            summary = resume(unfinished)
        else:
            summary = run(
                sweep_cfg,
                resolved_yaml=OmegaConf.to_yaml(redact(data)),
                overrides=tuple(redact_overrides(HydraConfig.get().overrides.task)),
                checked_storage=storage,
            )
    except (ConfigError, OmegaConfBaseException) as exc:
        _config_exit(exc, composed=True)
    except KeyboardInterrupt:  # Tune had no chance to end the sweep itself (a second Ctrl+C, ray://)
        _interrupted_exit()
    _summary_exit(summary)


def _unfinished(cfg: Any) -> str | None:
    """The unfinished sweep of ``cfg.name`` in its storage (``resume=auto``), or None."""
    from orchestrator.resume import RECORD_FILE

    return latest_unfinished(storage_dir(cfg.storage.path, os.getcwd()), cfg.name, RECORD_FILE)


def _summary_exit(summary: Any) -> None:
    """Print the summary; exit 75 after SIGTERM (resumable), 130 after Ctrl+C, 1 when every
    trial failed, else 0."""
    print(summary.render(), flush=True)
    if summary.interrupted and preempted():
        print(f"error: {_PREEMPTED_LINE}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if {status for status, count in summary.statuses.items() if count} == {"ERROR"}:
        where = summary.results_dir
        print(f"error: every trial failed (ERROR); their error files are in {where}", file=sys.stderr)
        sys.exit(EXIT_FAILED)


def _config_exit(exc: BaseException, *, composed: bool = False) -> None:
    message = str(exc).splitlines()[0] if isinstance(exc, ConfigError) else one_line(exc)
    message = with_origin(message) if composed else message  # the user's file that set the key
    print(f"error: {printable(redact_assignments(message))}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def _interrupted_exit() -> None:
    """Exit 130 with one line (75 after SIGTERM); the sweep has already ended its MLflow runs
    (KILLED, INTERRUPTED)."""
    if preempted():
        print(f"error: {_PREEMPTED_LINE}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    print("error: interrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


_PREEMPTED_LINE = (
    "preempted (SIGTERM): the sweep was saved; run the same command with resume=auto to finish it"
)


_STARTED: list[bool] = []  # set once Hydra has composed the config and called the task
_AUTO: list[bool] = []  # resume=auto was given
_PRINTING = ("-c", "--cfg", "-i", "--info")  # Hydra's flags that print the config
_QUOTED_KEY = re.compile(r"'([+~]*[\w.\-/@]+)'")


def one_line(exc: BaseException) -> str:
    """A Hydra/OmegaConf error as one ``<key>: <problem>`` line (a secret's value never shown)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, (yaml.YAMLError, UnicodeDecodeError)):  # in a config file: name it
        return file_problem(exc)
    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group, _, wanted = (exc.missing_cfg_file or "?").rpartition("/")
        choices = ", ".join(sorted(exc.options))
        return f"{group or 'config'}: no such option {wanted!r} (choose from {choices})"
    if isinstance(exc, OverrideParseException):
        key = re.match(r"\s*[+~]*([^=\s]+)=", exc.override or "")
        if key is None:
            return f"{exc.override}: cannot parse the override ({first.rstrip('.')})"
        if is_secret_key(key.group(1)):
            return f"{key.group(1)}: cannot parse the override (value hidden)"
        return f"{key.group(1)}: cannot parse the override {exc.override!r} ({first.rstrip('.')})"
    full_key = getattr(cause, "full_key", None) or getattr(exc, "full_key", None)
    if full_key and "not in struct" in str(cause or exc):
        parent = full_key.rpartition(".")[0]
        if parent == "trainable.hparams":
            plus = f"add a hyperparameter with a leading +: +{full_key}=..."
            return f"{full_key}: not in the search space ({plus})"
        known = known_keys(parent)
        return f"{full_key}: unknown key" + (f" (known here: {', '.join(known)})" if known else "")
    if full_key:
        text = [ln.strip() for ln in str(cause or exc).splitlines() if ln.strip()]
        return f"{full_key}: {text[0] if text else first}"
    assignment = re.search(r"'[+~]*([\w.\-/@]+)=[^']*'", first)
    if assignment and first.startswith("Ambiguous value"):
        return (
            f"{assignment.group(1)}: a comma-separated value lists values to sweep over (--multirun, "
            "not supported); quote it to pass one string"
        )
    if first.startswith("Config group override must be"):
        groups = {p.name for p in Path(conf.__file__).parent.iterdir() if p.is_dir()}
        pairs = [a.lstrip("+~").split("=", 1) for a in sys.argv[1:] if "=" in a]
        numeric = [k for k, v in pairs if k in groups and re.fullmatch(r"[-+.\deE]+|true|false", v)]
        key = numeric[0] if numeric else "config group"
        return f"{key}: {first[0].lower()}{first[1:].rstrip('.')}"
    quoted = _QUOTED_KEY.search(first)
    if quoted and first.startswith("Could not delete"):
        return f"{quoted.group(1)}: cannot delete it, no such key"
    if quoted and "An item is already at" in first:
        key = quoted.group(1)
        return f"{key}: already set: drop the + (or use ++{key}=... to add or override)"
    if quoted:
        key = quoted.group(1).lstrip("+~")
        problem = _QUOTED_KEY.sub(lambda m: "it" if m.group(1).lstrip("+~") == key else m.group(0), first)
        extra = [ln for ln in lines[1:] if ln.startswith(("Either", "Or", "To append"))]
        return f"{key}: {problem.rstrip('.')}" + (f" ({'; '.join(extra)})" if extra else "")
    return first


def main() -> None:
    """Compose the config, validate it, run the sweep; exit 2 with one line on a config error."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of Hydra's printer
    _STARTED.clear()
    install_preemption()
    _AUTO.clear()
    if "resume=auto" in sys.argv[1:]:  # the sweep of this name left unfinished, else a new one
        _AUTO.append(True)
        sys.argv.remove("resume=auto")
    if any(a.startswith("resume=") for a in sys.argv[1:]):
        _resume(sys.argv[1:])
        return
    printing = any(a in _PRINTING or a.startswith(("--cfg=", "--info=")) for a in sys.argv[1:])
    if any(a in ("-m", "--multirun") for a in sys.argv[1:]):
        _config_exit(ConfigError("--multirun: not supported (one command runs one sweep, which searches)"))
    captured = io.StringIO()
    try:
        # Hydra's own --cfg/--info printouts show the config: print them with secrets masked
        with contextlib.redirect_stdout(captured) if printing else contextlib.nullcontext():
            _hydra_main()
    except (ConfigError, HydraException, OmegaConfBaseException, yaml.YAMLError) as exc:
        _config_exit(exc)
    except (ValueError, TypeError) as exc:  # Hydra's own checks of an override's value
        if _STARTED:
            raise
        _config_exit(exc)
    finally:
        if printing:
            sys.stdout.write(redact_yaml(captured.getvalue()))


def _resume(args: list[str]) -> None:
    """``resume=<sweep dir>``: finish a sweep whose driver died, with the config saved in the sweep."""
    try:
        if len(args) != 1:
            raise ConfigError("resume: give the sweep directory alone (the config comes from the sweep)")
        path = args[0].removeprefix("resume=")
        if not path:
            raise ConfigError("resume: give the sweep directory (the 'Ray results:' line of its summary)")
        from orchestrator.sweep import resume

        summary = resume(path)
    except ConfigError as exc:
        _config_exit(exc)
    except KeyboardInterrupt:
        _interrupted_exit()
    _summary_exit(summary)


if __name__ == "__main__":
    main()
