"""The score file's columns: one definition for `egt score`, analyze, curate and the demo report.

`egt score` writes one row per pair: the pair's own columns plus `SCORE_COLUMNS`
(what each means: docs/definitions.md, "Score file"). The five entropy metrics a
user can name (`--metric answer|sentence|mean|max|vote`) map to their columns in
`METRIC_COLUMNS`; `hybrid` combines them by percentile rank.

    values = metric_values(read_rows("scores.parquet"), "max")            # nats per pair, NaN = undefined
    values = metric_values(rows, "hybrid", weights={"answer": 1, "vote": 1})  # in [0, 1]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from egt.core.errors import ConfigError, DataError
from egt.core.stats import percentile_ranks

# Metric name (CLI) -> column, in the order every table lists them.
METRIC_COLUMNS = {
    "answer": "answer_entropy_nats",
    "sentence": "sentence_entropy_nats",
    "mean": "mean_token_entropy_nats",
    "max": "max_token_entropy_nats",
    "vote": "vote_entropy_nats",
}
METRICS = tuple(METRIC_COLUMNS)
ENTROPY_COLUMNS = tuple(METRIC_COLUMNS.values())
MetricName = Literal["answer", "sentence", "mean", "max", "vote"]
MetricOrHybrid = Literal["answer", "sentence", "mean", "max", "vote", "hybrid"]

# Every column `egt score` adds to a pair's row, in the order it writes them.
SCORE_COLUMNS = (
    "completions",            # the K judgement texts
    "verdicts",               # K verdicts, 0 = none could be read
    "k_accuracy",             # share of the K verdicts equal to the label
    "majority_verdict",       # strict plurality of the verdicts that exist, else 0
    "parse_failures",         # judgements without a verdict
    "answer_entropy_nats",
    "answer_entropy_missing",  # judgements without an answer token (their answer entropy is undefined)
    "sentence_entropy_nats",
    "mean_token_entropy_nats",
    "max_token_entropy_nats",
    "vote_entropy_nats",
    "n_tokens_mean",          # generated tokens per judgement, mean over K
    "format_ok_rate",         # share of judgements in exactly the judge format
    "truncated",              # judgements cut off by max_new_tokens
)
# vLLM top-k mode: the entropy columns hold upper bounds; these the lower ones (vote is exact).
LOWER_BOUND_COLUMNS = {name: name.replace("_nats", "_lower_nats") for name in ENTROPY_COLUMNS[:-1]}


def metric_column(metric: str) -> str:
    """The score-file column of a metric name; ConfigError naming the choices otherwise."""
    if metric not in METRIC_COLUMNS:
        raise ConfigError(f"unknown metric '{metric}' (expected one of {', '.join(METRIC_COLUMNS)}, hybrid)")
    return METRIC_COLUMNS[metric]


def column_values(rows: list[dict], column: str, file: str = "<scores>") -> np.ndarray:
    """A float column as an array (None -> NaN); DataError naming the file and row if absent."""
    out = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        if column not in row:
            raise DataError(file, i, column, "missing column; expected a score file written by `egt score`")
        value = row[column]
        try:
            out[i] = np.nan if value is None else float(value)
        except (TypeError, ValueError):
            raise DataError(file, i, column, f"expected a number, got {value!r}") from None
    return out


def hybrid_score(columns: dict, weights: dict, missing: str = "highest") -> np.ndarray:
    """Weighted mean of the percentile ranks of the named columns: sum_m w_m rank_m / sum_m w_m."""
    unknown = sorted(set(weights) - set(columns))
    if unknown:
        raise ValueError(f"hybrid weights name {unknown}, but the columns are {sorted(columns)}")
    total = float(sum(weights.values()))
    if not weights or total <= 0:
        raise ValueError(f"hybrid weights must sum to > 0, got {dict(weights)}")
    lengths = {name: len(columns[name]) for name in weights}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"hybrid columns differ in length: {lengths}")
    score = sum(float(w) * percentile_ranks(columns[name], missing) for name, w in weights.items())
    return np.asarray(score, dtype=np.float64) / total


def metric_values(rows: list[dict], metric: str, weights: dict[str, float] | None = None,
                  missing: str = "highest", file: str = "<scores>") -> np.ndarray:
    """Per-pair values of a metric (nats), or the hybrid score in [0, 1]; NaN = undefined.

    hybrid = sum_m w_m * percentile_rank_m / sum_m w_m, with NaN placed per `missing`
    inside each percentile rank (with `missing=drop` a pair missing any part is NaN).
    """
    if metric != "hybrid":
        return column_values(rows, metric_column(metric), file)
    if not weights:
        raise ConfigError("metric 'hybrid' needs weights, e.g. weights={answer: 1.0, max: 1.0}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"hybrid weights must be >= 0 with a positive sum, got {weights}")
    columns = {name: column_values(rows, metric_column(name), file) for name in weights}
    score = hybrid_score(columns, weights, "highest" if missing == "drop" else missing)
    if missing == "drop":
        score[np.any([np.isnan(v) for v in columns.values()], axis=0)] = np.nan
    return score


def metric_label(metric: str) -> str:
    """What a metric is called in reports and manifests: its column, or 'hybrid'."""
    return metric if metric == "hybrid" else metric_column(metric)
