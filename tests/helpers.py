"""Builders shared by several test files (import with `from helpers import score_row`)."""

from __future__ import annotations

import math
from collections import Counter

from egt.schema import PreferencePair
from egt.scorefile import METRIC_COLUMNS, SCORE_COLUMNS


def score_row(pair_id: str, label: int = 1, verdicts=(1, 1, 1, 1), meta: dict | None = None,
              n_tokens_mean: float = 10.0, **metrics: float) -> dict:
    """One score-file row as `egt score` writes it: a pair's columns plus every column of SCORE_COLUMNS.

    Entropies are given by metric name (answer=, sentence=, mean=, max=, vote=); answer defaults to
    NaN (no verdict position), the others to 0. k_accuracy, majority_verdict, parse_failures and
    answer_entropy_missing follow from `verdicts`, `label` and the answer entropy as egt.entropy
    computes them.
    """
    unknown = sorted(set(metrics) - set(METRIC_COLUMNS))
    if unknown:
        raise TypeError(f"unknown metric(s) {unknown}; expected some of {list(METRIC_COLUMNS)}")
    votes = Counter(v for v in verdicts if v).most_common()
    majority = votes[0][0] if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]) else 0
    values = {name: (math.nan if name == "answer" else 0.0) for name in METRIC_COLUMNS}
    values.update(metrics)
    extra = {
        "completions": ["<think>x</think><answer>1</answer>"] * len(verdicts),
        "verdicts": list(verdicts),
        "k_accuracy": sum(v == label for v in verdicts) / len(verdicts),
        "majority_verdict": majority,
        "parse_failures": sum(v == 0 for v in verdicts),
        "answer_entropy_missing": int(math.isnan(values["answer"])),
        **{METRIC_COLUMNS[name]: value for name, value in values.items()},
        "n_tokens_mean": n_tokens_mean, "format_ok_rate": 1.0, "truncated": 0,
    }
    assert set(extra) == set(SCORE_COLUMNS)
    return PreferencePair(id=pair_id, images=[], question="Which is better?", response_1="one", response_2="two",
                          label=label, source="test", category="c", meta=meta or {}, extra=extra).to_row()
