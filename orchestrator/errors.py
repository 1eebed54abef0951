"""Errors the orchestrator reports to the user as one line and exit code 2."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the bad value."""
