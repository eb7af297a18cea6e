"""Selective prediction: a judge that may abstain, and how good its abstention is.

Abstention (selective prediction): a judge that may abstain keeps the pairs whose
uncertainty (an entropy) is at most a threshold. As the threshold rises through
the distinct values, coverage (share kept) and accuracy on the kept pairs trace the
risk-coverage curve (`risk_coverage`); pairs with equal uncertainty are kept or
dropped together, and an undefined uncertainty (NaN, e.g. no answer token) counts
as the highest. AURC is the area under risk (1 - accuracy) over coverage, a step
function from coverage 0: sum_i risk_i (coverage_i - coverage_{i-1}); without ties
it is the usual (1/n) sum_k risk(k/n). Lower is better; a judge whose uncertainty
carries no information has AURC ~ its overall risk. `coverage_threshold` gives the
smallest threshold that keeps at least a given share (ties kept together, so the
achieved coverage can exceed it) and `abstain_mask` applies a threshold or coverage.

Used by `egt eval` (egt.stages.abstention), `egt judge` and `egt rerank`. Pure functions of plain
lists, tested on hand-counted cases.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def accuracy(correct: Sequence[bool]) -> float:
    """Share of True; NaN for an empty list (an undefined accuracy, not 0)."""
    return sum(bool(c) for c in correct) / len(correct) if len(correct) else float("nan")


def _uncertainty(values: Sequence[float | None]) -> np.ndarray:
    """Floats with undefined values (None, NaN) as +inf: the least certain."""
    u = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.where(np.isnan(u), np.inf, u)


def risk_coverage(uncertainty: Sequence[float | None], correct: Sequence[bool]) -> dict:
    """The risk-coverage curve: one point per distinct uncertainty value, lowest first.

    Returns `threshold` (keep pairs with uncertainty <= it; inf for the undefined ones),
    `coverage` (share kept) and `accuracy` (on the kept pairs), lists of equal length.
    """
    u = _uncertainty(uncertainty)
    ok = np.asarray([bool(c) for c in correct], dtype=np.float64)
    if len(u) != len(ok):
        raise ValueError(f"{len(u)} uncertainties for {len(ok)} results")
    if not len(u):
        return {"threshold": [], "coverage": [], "accuracy": []}
    order = np.argsort(u, kind="stable")
    u, ok = u[order], ok[order]
    ends = np.flatnonzero(np.append(u[1:] != u[:-1], True))  # last index of each run of equal values
    kept = ends + 1
    return {"threshold": u[ends].tolist(), "coverage": (kept / len(u)).tolist(),
            "accuracy": (np.cumsum(ok)[ends] / kept).tolist()}


def aurc(uncertainty: Sequence[float | None], correct: Sequence[bool]) -> float:
    """Area under the risk-coverage curve, sum_i (1 - accuracy_i)(coverage_i - coverage_{i-1}); NaN if empty."""
    curve = risk_coverage(uncertainty, correct)
    if not curve["coverage"]:
        return float("nan")
    steps = np.diff(np.concatenate([[0.0], curve["coverage"]]))
    return float(np.sum((1.0 - np.asarray(curve["accuracy"])) * steps))


def coverage_threshold(uncertainty: Sequence[float | None], coverage: float) -> float:
    """The smallest threshold whose kept share (uncertainty <= threshold) is at least `coverage`."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    u = np.sort(_uncertainty(uncertainty))
    if not len(u):
        raise ValueError("coverage_threshold needs at least one value")
    return float(u[max(0, math.ceil(coverage * len(u) - 1e-9) - 1)])


def abstain_mask(uncertainty: Sequence[float | None], threshold: float | None = None,
                 coverage: float | None = None) -> list[bool]:
    """True where the judge abstains: uncertainty above `threshold`, or outside the `coverage` least uncertain.

    Exactly one of threshold / coverage. An undefined uncertainty always abstains under a
    threshold, and abstains under a coverage unless the coverage needs it.
    """
    if (threshold is None) == (coverage is None):
        raise ValueError("give exactly one of threshold and coverage")
    u = _uncertainty(uncertainty)
    limit = coverage_threshold(u, coverage) if coverage is not None else float(threshold)
    return [bool(v > limit) or (coverage is None and math.isinf(v)) for v in u]


def selective_accuracy(uncertainty: Sequence[float | None], correct: Sequence[bool], coverage: float) -> dict:
    """Accuracy on the pairs kept at `coverage` (ties kept together) and the coverage achieved."""
    keep = [not a for a in abstain_mask(uncertainty, coverage=coverage)]
    kept = [bool(c) for c, k in zip(correct, keep) if k]
    return {"accuracy": accuracy(kept), "coverage": len(kept) / len(keep) if keep else float("nan")}
