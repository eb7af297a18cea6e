"""egt.core.calibration: ECE with equal-mass bins, reliability bins, NLL, Brier and temperature scaling,
on hand-counted cases."""

from __future__ import annotations

import math
import random

import pytest

from egt.core import calibration as C


def test_sigmoid_and_pair_probability():
    assert C.sigmoid(0.0) == 0.5
    assert C.sigmoid(math.inf) == 1.0 and C.sigmoid(-math.inf) == 0.0
    assert C.sigmoid(-800.0) == 0.0 and C.sigmoid(800.0) == 1.0  # no overflow
    # both orders averaged: position 1 at +2 in the given order, response 1 at -1 in the swapped one
    assert C.pair_probability([2.0, -1.0]) == pytest.approx((C.sigmoid(2.0) + C.sigmoid(-1.0)) / 2)
    assert C.pair_probability([2.0], temperature=2.0) == pytest.approx(C.sigmoid(1.0))
    with pytest.raises(ValueError):
        C.pair_probability([])
    with pytest.raises(ValueError):
        C.pair_probability([1.0], temperature=0)


def test_ece_equal_mass_bins_by_hand():
    # confidences 0.6, 0.6, 0.9, 0.9 (p1 = 0.6, 0.4, 0.9, 0.1); two bins of two by confidence
    probs = [0.6, 0.4, 0.9, 0.1]
    labels = [1, 1, 1, 2]          # right, wrong, right, right
    bins = C.reliability_bins(probs, labels, bins=2)
    assert [b["n"] for b in bins] == [2, 2]
    assert bins[0] == {"n": 2, "confidence": pytest.approx(0.6), "accuracy": 0.5}
    assert bins[1] == {"n": 2, "confidence": pytest.approx(0.9), "accuracy": 1.0}
    assert C.ece(probs, labels, bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    # equal mass: 5 pairs in 2 bins are 3 + 2, never 5 + 0
    assert [b["n"] for b in C.reliability_bins([0.9] * 5, [1] * 5, bins=2)] == [3, 2]
    # a tie (p = 0.5) counts half right at confidence 0.5
    assert C.reliability_bins([0.5], [2], bins=1) == [{"n": 1, "confidence": 0.5, "accuracy": 0.5}]
    assert math.isnan(C.ece([], [], bins=3))
    lo, hi = C.ece_interval(probs * 10, labels * 10, bins=2, n_boot=200)
    assert 0 <= lo <= C.ece(probs * 10, labels * 10, bins=2) <= hi
    with pytest.raises(ValueError, match="labels"):
        C.ece([0.5], [0])


def test_nll_and_brier():
    assert C.nll([0.8, 0.3], [1, 2]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert C.brier([0.8, 0.3], [1, 2]) == pytest.approx((0.2 ** 2 + 0.3 ** 2) / 2)
    assert math.isfinite(C.nll([1.0], [2]))  # clipped, not inf


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = random.Random(0)
    logits, labels = [], []
    for _ in range(4000):
        z = rng.uniform(-6, 6)
        logits.append([z])
        labels.append(1 if rng.random() < C.sigmoid(z / 3.0) else 2)  # the judge is 3x overconfident
    fitted = C.fit_temperature(logits, labels)
    assert fitted == pytest.approx(3.0, rel=0.1)
    before = [C.pair_probability(z, 1.0) for z in logits]
    after = [C.pair_probability(z, fitted) for z in logits]
    assert C.nll(after, labels) < C.nll(before, labels)
    assert C.ece(after, labels) < C.ece(before, labels)
    # infinite log-odds do not break the fit
    assert 0.05 <= C.fit_temperature([[math.inf], [-math.inf], [1.0]], [1, 2, 1]) <= 20
