"""The user's train function named by ``trainable.fn``: checked on the driver, loaded in a trial.

``trainable.fn`` is ``module:function`` (``mypkg.train:train``), or a Hydra mapping with a
dotted ``_target_`` and ``_partial_: true`` whose other keys are bound as keyword arguments.
The launch directory goes first on ``sys.path`` wherever the function is imported, so a
package or a file beside where the sweep was launched is found. The driver checks without
running the user's code (:func:`check_target`: the module is found and defines the name); the
trial imports it (:func:`load_target`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.errors import ConfigError

KEY = "trainable.fn"


def split_target(spec: Any, key: str = KEY) -> tuple[str, str]:
    """(module, function) of ``spec``; ConfigError naming ``key`` when it is malformed."""
    if isinstance(spec, str):
        module, sep, name = spec.partition(":")
        if not (sep and module and name.isidentifier() and all(p.isidentifier() for p in module.split("."))):
            raise ConfigError(f"{key}: must be module:function (e.g. mypkg.train:train), got {spec!r}")
        return module, name
    if isinstance(spec, Mapping):
        target = spec.get("_target_")
        if not isinstance(target, str) or "." not in target:
            raise ConfigError(f"{key}._target_: must be a dotted path module.function, got {target!r}")
        if spec.get("_partial_") is not True:
            raise ConfigError(
                f"{key}._partial_: must be true (the trial calls the function with (hp, trial))"
            )
        module, _, name = target.rpartition(".")
        return module, name
    raise ConfigError(f"{key}: must be module:function or a mapping with _target_, got {spec!r}")


def check_target(spec: Any, launch_dir: str, key: str = KEY) -> None:
    """Check that ``spec``'s module is importable from ``launch_dir`` and defines the function.

    The module is found, not run (its parent packages are imported); the name is looked up in
    its source: a ``def``, a class, an assignment or an import at the top level.
    """
    module, name = split_target(spec, key)
    add_to_path(launch_dir)
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot import {module!r} from {launch_dir} ({exc})") from None
    if found is None:
        raise ConfigError(f"{key}: no module {module!r} (looked in {launch_dir} and the installed packages)")
    origin = found.origin or ""
    if not origin.endswith(".py"):
        return
    with open(origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=origin)
    if name not in _top_level_names(tree):
        raise ConfigError(f"{key}: {module} ({origin}) defines no {name!r}")


def load_target(spec: Any, launch_dir: str | None) -> Callable[..., Any]:
    """Import and return the function ``spec`` names (bound to its keyword arguments)."""
    module, name = split_target(spec)
    add_to_path(launch_dir)
    if isinstance(spec, Mapping):
        from hydra.utils import instantiate

        return instantiate(dict(spec))
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ConfigError(f"{KEY}: {module}.{name} is not a function")
    return fn


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def add_to_path(directory: str | None) -> None:
    """Put ``directory`` first on ``sys.path`` (and keep it there: later imports of the user's
    modules in this process need it too)."""
    if directory and directory not in sys.path:
        sys.path.insert(0, directory)
    importlib.invalidate_caches()
