"""egt.core.score_columns: the metric -> column map, column reading, hybrid scores, and the test row builder."""

import math

import numpy as np
import pytest
from helpers import score_row

from egt.core.errors import ConfigError, DataError
from egt.core.score_columns import (
    ENTROPY_COLUMNS,
    METRIC_COLUMNS,
    METRICS,
    SCORE_COLUMNS,
    column_values,
    hybrid_score,
    metric_column,
    metric_values,
)


def test_metric_columns():
    assert METRIC_COLUMNS == {"answer": "answer_entropy_nats", "sentence": "sentence_entropy_nats",
                              "mean": "mean_token_entropy_nats", "max": "max_token_entropy_nats",
                              "vote": "vote_entropy_nats"}
    assert METRICS == ("answer", "sentence", "mean", "max", "vote")
    assert set(ENTROPY_COLUMNS) <= set(SCORE_COLUMNS)
    assert metric_column("max") == "max_token_entropy_nats"
    with pytest.raises(ConfigError, match="unknown metric 'median'.*answer, sentence, mean, max, vote, hybrid"):
        metric_column("median")


def test_hybrid_score():
    columns = {"answer": np.array([0.1, 0.2, 0.3]), "vote": np.array([0.6, 0.0, 0.0])}
    # ranks: answer 0, .5, 1 ; vote 1, .25, .25
    got = hybrid_score(columns, {"answer": 3.0, "vote": 1.0})
    np.testing.assert_allclose(got, [(0 + 1) / 4, (1.5 + 0.25) / 4, (3 + 0.25) / 4])
    with pytest.raises(ValueError, match="columns"):
        hybrid_score(columns, {"sentence": 1.0})
    with pytest.raises(ValueError, match="sum"):
        hybrid_score(columns, {"answer": 0.0})


def test_metric_values_by_name_and_hybrid():
    rows = [score_row("a", answer=0.3, vote=0.0), score_row("b", vote=0.7), score_row("c", answer=0.1, vote=0.7)]
    np.testing.assert_array_equal(metric_values(rows, "vote"), [0.0, 0.7, 0.7])
    answer = metric_values(rows, "answer")
    assert answer[0] == 0.3 and math.isnan(answer[1]) and answer[2] == 0.1
    # answer ranks (NaN highest): a .5, b 1, c 0; vote ranks: a 0, b .75, c .75
    np.testing.assert_allclose(metric_values(rows, "hybrid", {"answer": 1.0, "vote": 1.0}), [0.25, 0.875, 0.375])
    dropped = metric_values(rows, "hybrid", {"answer": 1.0, "vote": 1.0}, missing="drop")
    assert math.isnan(dropped[1]) and dropped[0] == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="needs weights"):
        metric_values(rows, "hybrid")
    with pytest.raises(ConfigError, match=">= 0"):
        metric_values(rows, "hybrid", {"answer": -1.0, "vote": 2.0})


def test_column_values_errors_name_file_row_and_column():
    rows = [{"x": 1.0}, {"x": None}, {"y": 2.0}]
    with pytest.raises(DataError, match="s.parquet:2: field 'x' missing column"):
        column_values(rows, "x", "s.parquet")
    values = column_values(rows[:2], "x")
    assert values[0] == 1.0 and math.isnan(values[1])
    with pytest.raises(DataError, match="expected a number, got 'high'"):
        column_values([{"x": "high"}], "x")


def test_score_row_helper_follows_the_score_rules():
    row = score_row("p", label=2, verdicts=(2, 0, 1, 2), max=1.5)
    assert set(SCORE_COLUMNS) <= set(row)
    assert (row["k_accuracy"], row["majority_verdict"], row["parse_failures"]) == (0.5, 2, 1)
    assert math.isnan(row["answer_entropy_nats"]) and row["answer_entropy_missing"] == 1
    assert row["max_token_entropy_nats"] == 1.5 and row["vote_entropy_nats"] == 0.0
    assert score_row("t", verdicts=(1, 2))["majority_verdict"] == 0   # a tie has no majority
    with pytest.raises(TypeError, match="median"):
        score_row("p", median=1.0)
