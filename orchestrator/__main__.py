"""Entry point: ``python -m orchestrator [hydra overrides]`` (also the ``orchestrator`` command).

Configuration problems of any kind (an unknown group option or key, a wrong type or range,
a missing data directory, resources the cluster lacks) print one ``error:`` line naming the
key and exit with code 2, before any trial starts.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.config import load_config
from orchestrator.errors import ConfigError

logger = logging.getLogger("orchestrator")
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl+C


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
        sweep_cfg = load_config(data)  # type: ignore[arg-type]
        from orchestrator.sweep import run  # imports Ray: only once the config is known good

        summary = run(
            sweep_cfg,
            resolved_yaml=OmegaConf.to_yaml(data),
            overrides=tuple(HydraConfig.get().overrides.task),
        )
    except (ConfigError, OmegaConfBaseException) as exc:
        _config_exit(exc)
    print(summary.render(), flush=True)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _config_exit(exc: BaseException) -> None:
    message = str(exc) if isinstance(exc, ConfigError) else one_line(exc)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a Hydra/OmegaConf error, with a missing option's choices."""
    if isinstance(exc, MissingConfigException) and exc.options:
        group = (exc.missing_cfg_file or "").rsplit("/", 1)[0]
        wanted = (exc.missing_cfg_file or "?").rsplit("/", 1)[-1]
        return f"{group}={wanted}: no such option (choose from {', '.join(sorted(exc.options))})"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    cause = [ln.strip() for ln in str(exc.__cause__ or "").splitlines() if ln.strip()]
    if cause:
        text = f"{text.rstrip('.')}: {cause[0]}"
    hints = [ln for ln in lines[1:] if ln.startswith("To append")]
    if hints:
        text = f"{text} ({hints[0]})"
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override {exc.override!r}: {text}"
    key = getattr(exc, "full_key", None)
    return f"{key}: {text}" if key else text


def main() -> None:
    """Compose the config, validate it, run the sweep; exit 2 with one line on a config error."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of Hydra's printer
    try:
        _hydra_main()
    except (ConfigError, HydraException, OmegaConfBaseException) as exc:
        _config_exit(exc)


if __name__ == "__main__":
    main()
