"""egt.core.selective: risk-coverage, AURC, abstention thresholds on hand-counted cases."""

import math

import pytest

from egt.core import selective


def test_risk_coverage_and_aurc_without_ties():
    # sorted by uncertainty: 0.1 right, 0.2 right, 0.3 wrong, 0.4 wrong
    u, ok = [0.1, 0.4, 0.2, 0.3], [True, False, True, False]
    curve = selective.risk_coverage(u, ok)
    assert curve["threshold"] == [0.1, 0.2, 0.3, 0.4]
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["accuracy"] == pytest.approx([1.0, 1.0, 2 / 3, 0.5])
    # (1/n) sum_k risk(k/n) = (0 + 0 + 1/3 + 1/2) / 4
    assert selective.aurc(u, ok) == pytest.approx((1 / 3 + 1 / 2) / 4)
    # an uninformative ordering is worse, a perfect one best
    assert selective.aurc([0.4, 0.1, 0.3, 0.2], ok) == pytest.approx((1 + 1 + 2 / 3 + 1 / 2) / 4)
    assert selective.selective_accuracy(u, ok, 0.5) == {"accuracy": 1.0, "coverage": 0.5}
    assert selective.selective_accuracy(u, ok, 1.0)["accuracy"] == 0.5


def test_risk_coverage_ties_and_undefined_values():
    # ties enter together; None / NaN are the most uncertain and enter last
    u, ok = [0.0, 0.0, 1.0, None], [True, False, True, False]
    curve = selective.risk_coverage(u, ok)
    assert curve["coverage"] == [0.5, 0.75, 1.0]
    assert curve["accuracy"] == pytest.approx([0.5, 2 / 3, 0.5])
    assert curve["threshold"][-1] == float("inf")
    assert selective.aurc(u, ok) == pytest.approx(0.5 * 0.5 + 0.25 * (1 / 3) + 0.25 * 0.5)
    # sorted: {0.0 F, 0.0 T} -> coverage .5, accuracy .5; 1.0 F -> .75, 1/3; NaN T -> 1, .5
    assert selective.aurc([float("nan"), 0.0, 0.0, 1.0], ok) == pytest.approx(0.5 * 0.5 + 0.25 * (2 / 3) + 0.25 * 0.5)
    assert math.isnan(selective.aurc([], []))
    with pytest.raises(ValueError):
        selective.risk_coverage([0.1], [True, False])


def test_coverage_threshold_and_abstain_mask():
    u = [0.5, 0.1, 0.3, 0.2, None]
    assert selective.coverage_threshold(u, 0.6) == 0.3          # 3 of 5 kept
    assert selective.coverage_threshold(u, 0.61) == 0.5         # at least 61% -> 4 of 5
    assert selective.coverage_threshold(u, 1.0) == float("inf")
    assert selective.abstain_mask(u, coverage=0.6) == [True, False, False, False, True]
    assert selective.abstain_mask(u, threshold=0.2) == [True, False, True, False, True]
    assert selective.abstain_mask(u, threshold=float("inf")) == [False, False, False, False, True]  # undefined abstains
    assert selective.abstain_mask(u, coverage=1.0) == [False] * 5
    # ties are kept together: 80% asked, 100% reached
    assert selective.abstain_mask([0.0, 0.0, 0.0, 0.0, 0.1], coverage=0.5) == [False, False, False, False, True]
    assert selective.selective_accuracy([0.0, 0.0, 0.0, 0.0, 0.1], [True] * 4 + [False], 0.5) == \
        {"accuracy": 1.0, "coverage": 0.8}
    with pytest.raises(ValueError):
        selective.abstain_mask(u)
    with pytest.raises(ValueError):
        selective.abstain_mask(u, threshold=1.0, coverage=0.5)
    with pytest.raises(ValueError):
        selective.coverage_threshold(u, 0.0)
