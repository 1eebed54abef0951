"""The hyperparameters a trial accepts: their domains, defaults and validation.

Pure Python (no torch), so the orchestrator validates a whole search space before Ray starts,
and the train function validates the configuration it was handed by the same rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

#: The built-in models (trainables.models builds them).
MODELS = ("mlp", "cnn")
OPTIMIZERS = ("gd", "sgd", "sgd_momentum", "adam", "rmsprop")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
INITS = ("default", "kaiming", "xavier", "orthogonal")


@dataclass(frozen=True)
class Domain:
    """The values one hyperparameter may take.

    A value is valid when it has the domain's kind and, for numbers, lies inside the bounds
    (``low`` inclusive unless ``low_open``; ``high`` inclusive unless ``high_open``); for
    strings, when it is one of ``options``.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    options: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Return why ``value`` is outside the domain, or None when it is valid."""
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind is str:
            if not isinstance(value, str):
                return "must be a string"
            return None if value in self.options else f"must be one of {', '.join(self.options)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number ({self.kind.__name__})"
        if self.kind is int and not float(value).is_integer():
            return "must be an integer"
        if not math.isfinite(value):
            return "must be finite"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'<' if self.high_open else '<='} {self.high:g}"
        return None


#: Every hyperparameter the trainables understand, with its domain.
DOMAINS: dict[str, Domain] = {
    "optimizer": Domain(str, options=OPTIMIZERS),
    "lr": Domain(float, low=0.0, low_open=True),
    "momentum": Domain(float, low=0.0, high=1.0, high_open=True),
    "batch_size": Domain(int, low=1),
    "hidden_layers": Domain(int, low=0, high=64),
    "width": Domain(int, low=1),
    "activation": Domain(str, options=ACTIVATIONS),
    "batch_norm": Domain(bool),
    "dropout": Domain(float, low=0.0, high=1.0, high_open=True),
    "weight_decay": Domain(float, low=0.0),
    "l1": Domain(float, low=0.0),
    "shuffle": Domain(bool),
    "init": Domain(str, options=INITS),
    "init_scale": Domain(float, low=0.0, low_open=True),
    "epochs": Domain(int, low=1),
    "seed": Domain(int, low=0),
    # Read by the sweep, not the model: false runs the trial cold, without trainable.init_from.
    "warm_start": Domain(bool),
}


@dataclass(frozen=True)
class TrialParams:
    """The resolved hyperparameters of one trial; every field is checked against DOMAINS.

    ``seed`` None means "derive it from the sweep seed, the trial and the attempt".
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 32
    hidden_layers: int = 2
    width: int = 128
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    weight_decay: float = 0.0
    l1: float = 0.0
    shuffle: bool = True
    init: str = "default"
    init_scale: float = 1.0
    epochs: int = 20
    seed: int | None = None
    warm_start: bool = True  # false: this trial ignores trainable.init_from (the sweep reads it)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed" and value is None:
                continue
            problem = DOMAINS[f.name].problem(value)
            if problem is not None:
                raise ValueError(f"{f.name}: {problem}, got {value!r}")
            if DOMAINS[f.name].kind is int:
                object.__setattr__(self, f.name, int(value))
            elif DOMAINS[f.name].kind is float:
                object.__setattr__(self, f.name, float(value))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialParams:
        """Build from a trial config, taking the known keys and ignoring the rest."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
