"""Convergence rules on hand-made curves: one verdict per curve shape (pure, no Ray)."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from analysis.convergence import (
    CONVERGED,
    DEFAULT_THRESHOLDS,
    DIVERGED,
    OSCILLATING,
    PLATEAU_BAD,
    PREDICTED_WORSE,
    PROGRESSING,
    STATUSES,
    STUCK,
    Prediction,
    Thresholds,
    Verdict,
    convergence_epoch,
    diagnose,
    extrapolate,
)

NAN, INF = math.nan, math.inf
T40 = np.arange(1, 41)
RNG = np.random.default_rng(7)


def curve(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


# 1 + 2 exp(-t/3): within 1% of its plateau level 1 from k = ceil(3 ln 200) = 16 on.
EXP_LOSS = curve(1.0 + 2.0 * np.exp(-T40 / 3))
# A healthy run: accuracy rises to a noisy plateau at 0.9 while the loss flattens at 0.3.
GOOD_ACC = curve(0.9 - 0.5 * np.exp(-T40 / 2) + RNG.uniform(-0.003, 0.003, 40))
GOOD_LOSS = curve(0.3 + 1.5 * np.exp(-T40 / 2) + RNG.uniform(-0.002, 0.002, 40))
FLAT = [2.303, 2.302, 2.303, 2.302, 2.303, 2.302, 2.303, 2.302, 2.303, 2.302, 2.303, 2.302]
AT_CHANCE = [0.10, 0.11, 0.10, 0.09, 0.10, 0.10, 0.11, 0.10, 0.09, 0.10, 0.10, 0.10]
FALLING = curve(2.3 * 0.8 ** np.arange(12))
POW_ACC = curve(0.7 - 0.5 * T40[:12] ** -0.8)  # ends near 0.67 at epoch 40
POW_LOSS = curve(1.0 + 1.3 * T40[:12] ** -0.8)

OSC_ACC = [0.7, 0.4, 0.8, 0.3, 0.7, 0.4, 0.8, 0.3, 0.6, 0.4, 0.6, 0.35]
NOISY_ACC = curve(np.array(GOOD_ACC) + RNG.uniform(-0.03, 0.03, 40))
BAD_ACC = curve(np.array(GOOD_ACC) - 0.3)
DEAD = [0.5, 0.9, 0.93, 0.93, 0.94, 0.95]
VANISHING = [0.5, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6]
UNMEASURED = [0.5, 1e-4, 1e-5, NAN, 1e-6, 1e-6]
SLOW = dict(loss=curve(0.6 - 0.003 * T40), metric=curve(0.8 + 0.0015 * T40))
PREDICT = dict(loss=POW_LOSS, metric=POW_ACC, budget=40)

CASES = {  # name: (diagnose kwargs, status, kind, step)
    "nan at the end": (dict(loss=[2.3, 1.0, 0.5, NAN]), DIVERGED, "nonfinite", 4),
    "inf at the end": (dict(loss=[2.3, 1.0, INF]), DIVERGED, "nonfinite", 3),
    "nan earlier is not measured": (dict(loss=[2.3, 1.5, NAN, 1.0, 0.8]), PROGRESSING, None, 5),
    "blowup for 3 epochs": (dict(loss=[2.3, 1.0, 0.5, 0.4, 3.0, 5.0, 9.0]), DIVERGED, "blowup", 5),
    "one spike is no blowup": (dict(loss=[2.3, 1.0, 0.5, 0.4, 9.0, 0.35, 0.3]), PROGRESSING, None, 7),
    "diverged outranks stuck": (
        dict(loss=[*FLAT, NAN], metric=[*AT_CHANCE, 0.1], chance=0.1),
        DIVERGED,
        "nonfinite",
        13,
    ),
    "constant loss": (dict(loss=[0.5] * 10), STUCK, "no_progress", 10),
    "constant loss before grace": (dict(loss=[0.5] * 4), PROGRESSING, None, 4),
    "chance-level accuracy": (dict(loss=FLAT, metric=AT_CHANCE, chance=0.1), STUCK, "chance", 12),
    "chance level, loss falling": (dict(loss=FALLING, metric=AT_CHANCE, chance=0.1), PROGRESSING, None, 12),
    "vanishing gradient": (dict(loss=FALLING[:6], grad_norm=VANISHING), STUCK, "vanishing_grad", 6),
    "gradient not measured": (dict(loss=FALLING[:6], grad_norm=UNMEASURED), PROGRESSING, None, 6),
    "dead ReLUs": (dict(loss=FALLING[:6], dead_frac=DEAD), STUCK, "dead_relu", 6),
    "oscillating loss": (
        dict(loss=[1.0, 0.8, 0.6, 0.9, 0.5, 1.1, 0.6, 1.2, 0.5, 1.0, 0.7, 1.2]),
        OSCILLATING,
        None,
        12,
    ),
    "oscillating accuracy": (dict(loss=GOOD_LOSS[:12], metric=OSC_ACC), OSCILLATING, None, 12),
    "exponential decay to a plateau": (dict(loss=EXP_LOSS), CONVERGED, None, 16),
    "noisy but flat accuracy": (dict(loss=GOOD_LOSS, metric=GOOD_ACC, chance=0.1), CONVERGED, None, 9),
    "too noisy to call converged": (dict(loss=GOOD_LOSS, metric=NOISY_ACC), PROGRESSING, None, 40),
    "slow steady improvement": (SLOW, PROGRESSING, None, 40),
    "plateau at a bad level": (dict(loss=GOOD_LOSS, metric=BAD_ACC, best=0.95), PLATEAU_BAD, None, 12),
    "plateau at a good level": (dict(loss=GOOD_LOSS, metric=GOOD_ACC, best=0.92), CONVERGED, None, 9),
    "predicted worse": (dict(**PREDICT, best=0.95), PREDICTED_WORSE, None, 12),
    "too early to predict": (
        dict(loss=POW_LOSS[:7], metric=POW_ACC[:7], best=0.95, budget=40),
        PROGRESSING,
        None,
        7,
    ),
    "no best, no prediction": (PREDICT, PROGRESSING, None, 12),
    "predicted to come close": (dict(**PREDICT, best=0.72), PROGRESSING, None, 12),
}


@pytest.mark.parametrize("name", CASES)
def test_verdict_table(name: str) -> None:
    kwargs, status, kind, step = CASES[name]
    verdict = diagnose(**kwargs)
    assert (verdict.status, verdict.kind, verdict.step) == (status, kind, step), verdict.reason
    assert verdict.status in STATUSES and verdict.reason and verdict.evidence["epochs"] == len(kwargs["loss"])


def test_reasons_carry_the_numbers() -> None:
    assert diagnose([0.5, 0.4, NAN]).reason == "diverged at epoch 3: val_loss is nan"
    blowup = diagnose([2.3, 1.0, 0.5, 0.4, 3.0, 5.0, 9.0])
    assert blowup.reason == "diverged at epoch 5: val_loss 9 is 22x its best 0.4"
    assert blowup.evidence["ratio"] == pytest.approx(22.5)
    dead = diagnose(FALLING[:6], dead_frac=[0.9, 0.9, 0.93, 0.93, 0.94, 0.93])
    assert dead.reason == "stuck: 93% of ReLU units dead after 6 epochs"
    assert diagnose(EXP_LOSS).reason.startswith("converged at epoch 16 (last 5 epochs within 0.0% of 1")
    worse = diagnose(POW_LOSS, metric=POW_ACC, best=0.95, budget=40)
    assert re.fullmatch(r"predicted worse: 0\.6\d+ ± 0\.0\d+ at epoch 40 vs best 0\.95", worse.reason)
    assert (
        worse.evidence["low"]
        <= worse.evidence["mean"]
        <= worse.evidence["high"]
        < worse.evidence["optimistic"]
    )


def test_exponential_decay_offline_and_online_agree() -> None:
    assert convergence_epoch(EXP_LOSS) == 16
    online = [diagnose(EXP_LOSS[:n]) for n in range(1, 41)]
    first = next(v for v in online if v.status != PROGRESSING)
    # declared once the trend has flattened too (epoch 27), dated back to where the plateau began
    assert (first.status, first.step, first.evidence["epochs"]) == (CONVERGED, 16, 27)
    assert all(v.status == CONVERGED and v.step == 16 for v in online[26:])
    # with a budget the trend must hold until the budget: declared later, same convergence epoch
    with_budget = next(n for n in range(1, 41) if diagnose(EXP_LOSS[:n], budget=40).status != PROGRESSING)
    assert with_budget > 27 and diagnose(EXP_LOSS[:with_budget], budget=40).step == 16


def test_convergence_epoch_edges() -> None:
    assert convergence_epoch(curve(0.8 + 0.0015 * T40), mode="max") is None  # still improving
    assert convergence_epoch(GOOD_ACC, mode="max") == 9
    assert convergence_epoch([1.0, 1.0, 1.0]) is None  # fewer than min_epochs
    assert convergence_epoch([*EXP_LOSS[:30], NAN, *EXP_LOSS[31:]]) == 32  # NaN ends the plateau looking back
    assert convergence_epoch([*EXP_LOSS, 5.0]) is None  # ends off the plateau
    with pytest.raises(ValueError, match="mode"):
        convergence_epoch(EXP_LOSS, mode="maximize")


@pytest.mark.parametrize(
    ("name", "cut", "kwargs"),
    [
        ("no progress", 12, dict(loss=FLAT)),
        ("chance", 12, dict(loss=FLAT, metric=AT_CHANCE, chance=0.1)),
        ("blowup", 10, dict(loss=[2.3, 1.0, 0.5, 0.3, 0.25, 0.2, 2.0, 4.0, 8.0, 16.0])),
        ("converged", 40, dict(loss=EXP_LOSS)),
        ("converged on a metric", 40, dict(loss=GOOD_LOSS, metric=GOOD_ACC)),
    ],
)
def test_window_only_input_gives_the_full_verdict(name: str, cut: int, kwargs: dict) -> None:
    full = diagnose(**kwargs)
    keep = {"no progress": 10, "chance": 10, "blowup": 6, "converged": 30, "converged on a metric": 35}[name]
    start = cut - keep
    window = {k: v[start:] if isinstance(v, list) else v for k, v in kwargs.items()}
    loss = kwargs["loss"]
    window_only = diagnose(**window, start_epoch=start + 1, initial_loss=loss[0], best_loss=min(loss[:start]))
    assert window_only == full
    assert full.status != PROGRESSING


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window", 1),
        ("window", 2.5),
        ("rel_tol", 0.0),
        ("rel_tol", -0.1),
        ("rel_tol", NAN),
        ("grace", -1),
        ("min_epochs", True),
        ("diverge_factor", 1.0),
        ("dead_frac", 0.0),
        ("dead_frac", 1.5),
        ("progress_frac", 1.5),
        ("chance_margin", -0.01),
        ("vanishing_grad", "small"),
        ("predict_headroom", 2.0),
        ("predict_min_epochs", 0),
    ],
)
def test_thresholds_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"Thresholds\.{field} must be .*: got {field}="):
        Thresholds(**{field: value})


def test_thresholds_defaults_are_valid_and_replaceable() -> None:
    assert Thresholds() == DEFAULT_THRESHOLDS
    strict = dataclasses.replace(DEFAULT_THRESHOLDS, rel_tol=0.001)
    assert diagnose(GOOD_LOSS, metric=GOOD_ACC, thresholds=strict).status == PROGRESSING


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mode"):
        diagnose([1.0, 0.9], mode="maximize")
    with pytest.raises(ValueError, match="metric must hold one value per loss epoch"):
        diagnose([1.0, 0.9], metric=[0.5])
    with pytest.raises(ValueError, match="loss needs >= 1 epoch"):
        diagnose([])
    with pytest.raises(ValueError, match="start_epoch"):
        diagnose([1.0], start_epoch=0)


def test_verdicts_are_frozen_and_hashable() -> None:
    verdict = diagnose(FLAT, metric=AT_CHANCE, chance=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = PROGRESSING  # type: ignore[misc]
    with pytest.raises(TypeError):
        verdict.evidence["chance"] = 0.5  # type: ignore[index]
    again = diagnose(FLAT, metric=AT_CHANCE, chance=0.1)
    assert again == verdict and hash(again) == hash(verdict) and len({verdict, again}) == 1
    assert isinstance(verdict, Verdict) and all(isinstance(v, float) for v in verdict.evidence.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_THRESHOLDS.window = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("truth", "mode", "bounds"),
    [
        (lambda t: 0.95 - 0.6 * t**-0.5, "max", (0.0, 1.0)),  # power law, accuracy
        (lambda t: 0.9 - 0.5 * np.exp(-t / 6), "max", (0.0, 1.0)),  # exponential, accuracy
        (lambda t: 0.2 + 2.0 * t**-0.7, "min", None),  # power law, loss
    ],
)
@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_extrapolation_brackets_the_truth(truth, mode: str, bounds, noise: float) -> None:
    t = np.arange(1.0, 21.0)
    observed = curve(truth(t) + np.random.default_rng(3).normal(0.0, noise, t.size))
    prediction = extrapolate(observed, 100, mode=mode, bounds=bounds)
    assert isinstance(prediction, Prediction) and prediction.at == 100
    assert prediction.family in ("pow3", "exp3", "ensemble")
    assert prediction.low <= prediction.mean <= prediction.high
    assert prediction.low <= truth(100.0) <= prediction.high
    assert abs(prediction.mean - truth(100.0)) < (0.01 if noise == 0.0 else 0.1)  # 5x beyond the data


def test_extrapolation_nan_policy_and_bounds() -> None:
    assert extrapolate([0.1, 0.5, NAN], 10) is None
    assert extrapolate([0.1, NAN, 0.5, INF, 0.6], 10) is None  # 3 finite points
    with_gap = extrapolate([0.1, 0.5, NAN, 0.7, 0.75, 0.78, 0.8], 20)
    assert with_gap is not None and 0.8 <= with_gap.mean <= with_gap.high <= 1.0
    near_one = extrapolate(curve(1.0 - 0.5 * T40[:10] ** -1.0), 1000)
    assert near_one is not None and near_one.high <= 1.0
    shifted = extrapolate(POW_ACC[4:], 40, start_epoch=5)
    assert shifted is not None and shifted.low <= 0.7 - 0.5 * 40**-0.8 <= shifted.high
    with pytest.raises(ValueError, match="mode"):
        extrapolate(POW_ACC, 40, mode="up")


def test_extrapolation_handles_long_and_constant_curves() -> None:
    long = extrapolate(curve(0.9 - 0.5 * np.arange(1, 1001) ** -0.5), 2000)
    assert long is not None and long.low <= 0.9 - 0.5 * 2000**-0.5 <= long.high
    flat = extrapolate([0.5] * 10, 50)
    assert (
        flat is not None and flat.mean == 0.5 and flat.low < 0.5 < flat.high and flat.high - flat.low < 0.01
    )


def test_a_run_blown_up_from_its_first_epoch_diverges_against_the_chance_loss():
    loss = [21.6, 30.6, 32.5, 46.7, 45.6]
    verdict = diagnose(loss, metric=[0.1] * 5, chance=0.1)
    assert verdict.status == "diverged" and verdict.kind == "blowup" and verdict.step == 1
    assert diagnose(loss, metric=[0.1] * 5).status != "diverged"  # without chance: no reference
