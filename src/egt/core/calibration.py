"""Calibration of a judge's answer probabilities: ECE with equal-mass bins, reliability bins, temperature scaling.

Pure functions of plain lists, tested on hand-counted cases (tests/core/test_calibration.py); used by
`egt calibrate` (egt.judge.calibrate) and the reward service (egt.judge.serve).

The probability. For one judgement the judge's answer distribution is read at the verdict token
(egt.judge.probability): `z = log P("1") - log P("2")`, the log-odds of position 1 renormalised over
the two answers. Oriented to the caller's response 1 (a judgement of the swapped order has its sign
flipped), a pair's probability that response 1 is better is the mean over its judgements (both
orders: position-debiased) of `sigmoid(z / T)`:

    p1 = mean_j sigmoid(z_j / T)                      (`pair_probability`)

`T` = 1 is the judge as it is; temperature scaling (Guo et al., 2017) fits one `T` on held-out
labelled pairs by minimising the negative log-likelihood of their labels (`fit_temperature`). A
z of +-inf (the other answer had no probability mass at all) stays at 1 or 0 for every T.

Calibration error. Each pair's prediction is its more likely response, its confidence
`max(p1, 1 - p1)`, correct 1 or 0 (0.5 on an exact tie). Pairs are sorted by confidence and cut
into `bins` bins of (nearly) equal size ("equal-mass" bins, `np.array_split`: each bin's size
differs by at most one); ECE = sum_b (n_b / n) |accuracy_b - confidence_b|. Equal-mass bins keep
each bin's accuracy estimate on the same number of pairs, where equal-width bins leave most pairs
in the top bin of a confident judge. `reliability_bins` gives the bins' points for a reliability
diagram (accuracy against mean confidence; the diagonal is perfect calibration); `ece_interval` a
percentile bootstrap interval over the pairs.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TEMPERATURE_BOUNDS = (0.05, 20.0)
_EPS = 1e-12


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z) without overflow; +-inf give 1 and 0."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def pair_probability(logits: Sequence[float], temperature: float = 1.0) -> float:
    """P(response 1 better): the mean of sigmoid(z / T) over a pair's judgements (z oriented to response 1)."""
    if not len(logits):
        raise ValueError("pair_probability needs at least one judgement's log-odds")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(np.mean([sigmoid(float(z) / temperature) for z in logits]))


def confidence_and_correct(prob_1: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: confidence max(p1, 1 - p1) and correctness of the more likely response (0.5 on a tie)."""
    p = np.asarray(prob_1, dtype=np.float64)
    y = np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels")
    if not np.isin(y, (1, 2)).all():
        raise ValueError("labels must be 1 or 2")
    confidence = np.maximum(p, 1.0 - p)
    correct = np.where(p == 0.5, 0.5, ((p > 0.5) == (y == 1)).astype(np.float64))
    return confidence, correct


def reliability_bins(prob_1: Sequence[float], labels: Sequence[int], bins: int = 10) -> list[dict]:
    """Equal-mass bins by confidence: {n, confidence (mean), accuracy (mean)} per non-empty bin."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence, correct = confidence_and_correct(prob_1, labels)
    order = np.argsort(confidence, kind="stable")
    out = []
    for idx in np.array_split(order, min(bins, max(len(order), 1))):
        if len(idx):
            out.append({"n": int(len(idx)), "confidence": float(confidence[idx].mean()),
                        "accuracy": float(correct[idx].mean())})
    return out


def ece(prob_1: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """Expected calibration error with equal-mass bins (module docstring); NaN for no pairs."""
    table = reliability_bins(prob_1, labels, bins)
    n = sum(b["n"] for b in table)
    if not n:
        return float("nan")
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in table))


def ece_interval(prob_1: Sequence[float], labels: Sequence[int], bins: int = 10, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ECE (pairs resampled with replacement, `n_boot` times, seeded)."""
    p, y = np.asarray(prob_1, dtype=np.float64), np.asarray(labels)
    if not len(p):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [ece(p[idx], y[idx], bins) for idx in (rng.integers(0, len(p), len(p)) for _ in range(n_boot))]
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, 1 - (1 - level) / 2))


def nll(prob_1: Sequence[float], labels: Sequence[int]) -> float:
    """Mean negative log-likelihood (nats) of the labels; probabilities clipped to [1e-12, 1 - 1e-12]."""
    p = np.clip(np.asarray(prob_1, dtype=np.float64), _EPS, 1.0 - _EPS)
    y1 = np.asarray(labels) == 1
    return float(-np.mean(np.where(y1, np.log(p), np.log1p(-p)))) if len(p) else float("nan")


def brier(prob_1: Sequence[float], labels: Sequence[int]) -> float:
    """Mean squared error of p1 against the outcome (1 when response 1 is the better one)."""
    p = np.asarray(prob_1, dtype=np.float64)
    y1 = (np.asarray(labels) == 1).astype(np.float64)
    return float(np.mean((p - y1) ** 2)) if len(p) else float("nan")


def fit_temperature(pair_logits: Sequence[Sequence[float]], labels: Sequence[int],
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T in `bounds` minimising the NLL of `labels` under pair_probability(z, T) (bounded, on log T)."""
    from scipy.optimize import minimize_scalar

    if len(pair_logits) != len(labels):
        raise ValueError(f"{len(pair_logits)} pairs for {len(labels)} labels")
    if not len(labels):
        raise ValueError("fit_temperature needs at least one labelled pair")
    logits = [np.asarray(z, dtype=np.float64) for z in pair_logits]

    def loss(log_t: float) -> float:
        t = math.exp(log_t)
        probs = [float(np.mean(1.0 / (1.0 + np.exp(np.clip(-z / t, -700, 700))))) for z in logits]
        return nll(probs, labels)

    lo, hi = (math.log(b) for b in bounds)
    result = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))
