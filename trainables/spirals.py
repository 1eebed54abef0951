"""Three interleaved spirals in the plane: a small 3-class problem generated in code.

Class ``k``'s points lie on the arm ``r = t``, ``angle = 2*pi*(turns*t + k/3)`` for ``t`` in
[0, 1], with Gaussian noise on both coordinates. Small networks on it often settle in a local
minimum (one or two arms separated, the rest guessed), and whether they do depends on the
weight-initialisation seed: the curve banks use it to measure restarts.
"""

from __future__ import annotations

import numpy as np

SPIRAL_CLASSES = 3
SPIRAL_POINTS = 500  # per class: 1500 in all
SPIRAL_TURNS = 1.0  # turns of each arm from the centre to radius 1
SPIRAL_NOISE = 0.04  # standard deviation of the noise on each coordinate
SPIRAL_SEED = 0  # the generator's own seed: the dataset never changes


def make_spirals(
    points: int = SPIRAL_POINTS,
    turns: float = SPIRAL_TURNS,
    noise: float = SPIRAL_NOISE,
    seed: int = SPIRAL_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``SPIRAL_CLASSES * points`` 2-D points (float32, (N, 2)) and their labels (int64).

    Deterministic for a given ``seed`` (a private ``numpy`` Generator; the global RNG is untouched).
    """
    if points < 1 or turns <= 0 or noise < 0:
        raise ValueError(
            f"make_spirals: needs points >= 1, turns > 0, noise >= 0, got {points=}, {turns=}, {noise=}"
        )
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, size=(SPIRAL_CLASSES, points))
    angle = 2.0 * np.pi * (turns * t + np.arange(SPIRAL_CLASSES)[:, None] / SPIRAL_CLASSES)
    xy = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=-1).reshape(-1, 2)
    xy += rng.normal(0.0, noise, size=xy.shape)
    labels = np.repeat(np.arange(SPIRAL_CLASSES, dtype=np.int64), points)
    return xy.astype(np.float32), labels
