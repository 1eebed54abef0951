"""Errors the orchestrator reports to the user as one line and exit code 2."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the bad value."""


def printable(text: str, limit: int = 2000) -> str:
    """``text`` safe for a terminal line: each unprintable character (an escape sequence's ESC, a
    newline, a lone surrogate from a non-UTF-8 argument) written as its Python escape, and the
    whole cut to ``limit`` characters."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."
