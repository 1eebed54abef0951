"""Secrets never leave the process: config values under secret-looking keys are masked as ``***``.

The rule, on a key's last dotted component (``tracking.token`` -> ``token``): split it into
words at ``_``, ``-``, spaces and camelCase humps, lower-case them; the key is a secret when
its last word is one of :data:`SECRET_WORDS` (``token``, ``password``, ``secret``, ``key``,
``apikey``, ``credentials``, ...). So ``token``, ``api_key``, ``accessKey``, ``AWS_SECRET``,
``db-password`` and ``APIKEY`` are secrets; ``keep``, ``monkey``, ``key_size``,
``max_tokens`` and ``token_count`` are not (a whole word must match, and it must be the
last one). A secret key's value is masked whatever it is (a mapping or list under it too);
``None`` stays ``None`` (nothing to hide, and it shows the key is unset).

Pure and stdlib-only: callers mask a mapping before logging it (:func:`redact`), override
strings such as ``tracking.token=abc`` (:func:`redact_override`, :func:`redact_assignments`)
and YAML text printed by others (:func:`redact_yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
#: A key whose last word is one of these holds a secret.
SECRET_WORDS: frozenset[str] = frozenset(
    {
        "token",
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "key",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "credential",
        "credentials",
    }
)

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# key=value in free text (Hydra overrides, error messages): an optional +, ++ or ~ prefix,
# a dotted/slashed key, then the value up to whitespace, a quote or a comma (Hydra's
# override_dirname joins overrides with commas).
_ASSIGNMENT = re.compile(r"(?P<key>[A-Za-z_][\w.\-/@]*)=(?P<value>[^\s'\",]*)")
# one YAML mapping line: indentation (and list dashes), a plain or quoted key, the rest
_YAML_LINE = re.compile(r"^(?P<lead>\s*(?:-\s+)*)(?P<key>[\"']?[^\s:#'\"][^:#'\"]*[\"']?):(?P<rest>\s.*|)$")
_EMPTY = ("", "null", "~", "{}", "[]", "''", '""')


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


def is_secret_key(key: str) -> bool:
    """True when the last dotted component of ``key`` ends with a secret word (module rule)."""
    last = str(key).strip().strip("'\"").lstrip("+~").rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    words = _words(last)
    return bool(words) and words[-1] in SECRET_WORDS


def redact(value: Any) -> Any:
    """A copy of ``value`` (nested mappings and lists) with every secret key's value masked."""
    if isinstance(value, Mapping):
        return {
            k: (MASK if v is not None else None) if is_secret_key(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def redact_override(override: str) -> str:
    """``tracking.token=abc`` -> ``tracking.token=***``; any other override is returned as it is."""
    key, sep, value = override.partition("=")
    if sep and is_secret_key(key) and value.strip() not in ("null", ""):
        return f"{key}={MASK}"
    return override


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """:func:`redact_override` applied to each override."""
    return [redact_override(o) for o in overrides]


def redact_assignments(text: str) -> str:
    """Mask the value of every ``secret_key=value`` written anywhere in ``text``."""

    def mask(m: re.Match[str]) -> str:
        if is_secret_key(m.group("key")) and m.group("value") not in ("", "null"):
            return f"{m.group('key')}={MASK}"
        return m.group(0)

    return _ASSIGNMENT.sub(mask, text)


def redact_yaml(text: str) -> str:
    """Mask secret keys' values in YAML text (block style, as OmegaConf and Hydra print it).

    A secret key's inline value becomes ``'***'``; the lines nested under it (a mapping, a
    list or a block scalar) are replaced by one masked line. ``key=value`` assignments
    (Hydra's override lists) are masked too.
    """
    out: list[str] = []
    hidden_indent: int | None = None  # inside the block of a secret key indented this much
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip(" "))
        if hidden_indent is not None:
            list_item = indent == hidden_indent and line.lstrip().startswith("- ")
            if not line.strip() or indent > hidden_indent or list_item:
                continue
            hidden_indent = None
        m = _YAML_LINE.match(line.rstrip("\r\n"))
        if m and is_secret_key(m.group("key")):
            rest = m.group("rest").strip()
            end = line[len(line.rstrip("\r\n")) :]
            if rest in ("", "|", ">", "|-", ">-", "|+", ">+"):
                hidden_indent = len(m.group("lead"))
                out.append(f"{m.group('lead')}{m.group('key')}: '{MASK}'{end}")
                continue
            if rest not in _EMPTY:
                out.append(f"{m.group('lead')}{m.group('key')}: '{MASK}'{end}")
                continue
        out.append(redact_assignments(line))
    return "".join(out)
