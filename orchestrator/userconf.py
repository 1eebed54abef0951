"""A user's own config files (``--config-dir ./hpo experiment=mine``): their mistakes in one line
that names the file.

Three kinds: YAML that does not parse (the file, line and column PyYAML reports, the config
group as the key), a file that is not UTF-8 (PyYAML's reader names no file: the config
directories are searched for it), and a value our validation refuses (the key, and the user's
file that set it when one did: :func:`with_origin`).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)
_KEY = re.compile(r"^([\w.\-]+): ")


def config_dirs(argv: list[str] | None = None) -> list[str]:
    """The directories ``--config-dir``/``-cd`` adds (as given on the command line)."""
    args = sys.argv[1:] if argv is None else argv
    found = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            found.append(args[i + 1])
        elif arg.startswith("--config-dir="):
            found.append(arg.split("=", 1)[1])
    return found


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return full if rel.startswith("..") else rel


def _group(path: str, dirs: list[str]) -> str:
    """The config group a file belongs to (its directory below a config dir); ``config`` at the top."""
    full = Path(path).resolve()
    for d in dirs:
        root = Path(d).resolve()
        if full.is_relative_to(root):
            group = full.parent.relative_to(root).as_posix()
            return group if group != "." else "config"
    return full.parent.name or "config"


def file_problem(exc: BaseException, dirs: list[str] | None = None) -> str:
    """A YAML or encoding error in a config file as ``<group>: <file>, line L, column C: <problem>``.

    The rule: PyYAML's mark (the file, its 0-based line and column) is reported 1-based; without
    a mark (a file that is not UTF-8) the first ``.yaml`` file under the config directories
    that does not decode is named.
    """
    dirs = config_dirs() if dirs is None else dirs
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"{_shown(mark.name)}, line {mark.line + 1}, column {mark.column + 1}"
        problem = exc.problem or "cannot parse it"
        context = f" ({exc.context})" if exc.context else ""
        return f"{_group(mark.name, dirs)}: cannot parse {where}: {problem}{context}"
    for d in dirs:
        for path in sorted(Path(d).rglob("*.y*ml")):
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as err:
                where = f"{_group(str(path), dirs)}: {_shown(str(path))}"
                return f"{where} is not UTF-8 text ({err.reason} at byte {err.start})"
    return f"config: cannot read a config file ({' '.join(str(exc).split())})"


def _sets(data: Any, dotted: str) -> bool:
    """True when the mapping ``data`` holds the dotted key ``dotted`` (or the mapping above it)."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set_in_file(path: Path, group: str, key: str) -> bool:
    """Whether the YAML file ``path`` of config ``group`` sets ``key`` (its ``@package`` honoured)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    declared = _PACKAGE.search(text)
    package = declared.group(1) if declared else "_group_"
    package = {"_global_": "", "_group_": group.replace("/", ".")}.get(package, package)
    if package:
        if not key.startswith(package + "."):
            return False
        key = key[len(package) + 1 :]
    return _sets(data, key)


def origin(key: str, choices: dict[str, Any], dirs: list[str], overrides: list[str]) -> str | None:
    """The user's file that set ``key``: the last chosen option file (``<dir>/<group>/<option>.yaml``)
    that sets it, unless the command line set it (the command line wins)."""
    if any(re.match(rf"[+~]*{re.escape(key)}=", o) for o in overrides):
        return None
    found = None
    for group, option in choices.items():
        if not isinstance(option, str) or group.startswith("hydra"):
            continue
        for d in dirs:
            path = Path(d) / group / f"{option}.yaml"
            if path.is_file() and _set_in_file(path, group, key):
                found = _shown(str(path))
    return found


def with_origin(message: str) -> str:
    """``message`` (``<key>: <problem>``) with `` (set in <file>)`` when a user's config file set the
    key; unchanged when none did, or when Hydra's config of this run is not there."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    matched = _KEY.match(message)
    if matched is None or not HydraConfig.initialized():
        return message
    try:  # Hydra's record of this run, read unresolved (an override may hold a bad ${...})
        hc = OmegaConf.to_container(HydraConfig.get(), resolve=False)
        dirs = [s["path"] for s in hc["runtime"]["config_sources"] if s["schema"] == "file"]
        found = origin(matched.group(1), hc["runtime"]["choices"], dirs, hc["overrides"]["task"])
    except Exception:  # noqa: BLE001 - naming the file is a help; the error line comes first
        return message
    return f"{message} (set in {found})" if found else message


__all__ = ["config_dirs", "file_problem", "origin", "with_origin"]
