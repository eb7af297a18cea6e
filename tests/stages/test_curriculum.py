"""Curriculum orderings: exact orders and stages, ties by id, seeded shuffles."""

import math
import re

import numpy as np
import pytest

from egt.core.errors import DataError
from egt.stages.curriculum import order_pairs, quantile_bins, sequence_by_order

NAN = math.nan
# Sorted ascending with ties by id: b(0.1) d(0.1) e(0.3) a(0.5) c(nan)
VALUES = [0.3, 0.1, NAN, 0.1, 0.5]
IDS = ["e", "d", "c", "b", "a"]


def test_ascending_ties_by_id_and_missing_policies():
    order, stage = order_pairs(VALUES, IDS, "ascending")
    assert order.tolist() == [2, 1, 4, 0, 3]
    assert stage.tolist() == [0, 0, 0, 0, 0]
    order, _ = order_pairs(VALUES, IDS, "ascending", missing="lowest")
    assert order.tolist() == [3, 2, 0, 1, 4]


def test_descending_puts_undefined_first_and_breaks_ties_by_id():
    order, _ = order_pairs(VALUES, IDS, "descending")
    # c(nan as highest) a(0.5) e(0.3) b(0.1) d(0.1)
    assert order.tolist() == [2, 4, 0, 3, 1]


def test_random_is_a_seeded_permutation_of_the_id_sorted_rows():
    order, stage = order_pairs(VALUES, IDS, "random", seed=3)
    perm = np.random.default_rng(3).permutation(5)
    by_id = sorted(IDS)
    expected = {by_id[p]: pos for pos, p in enumerate(perm)}
    assert {i: int(o) for i, o in zip(IDS, order)} == expected
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4] and stage.tolist() == [0] * 5
    # the input row order does not matter, the seed does
    shuffled = [4, 2, 0, 3, 1]
    order2, _ = order_pairs([VALUES[i] for i in shuffled], [IDS[i] for i in shuffled], "random", seed=3)
    assert {IDS[i]: int(o) for i, o in zip(shuffled, order2)} == expected
    orders = {tuple(order_pairs(VALUES, IDS, "random", seed=s)[0]) for s in range(6)}
    assert len(orders) > 1


def test_buckets_stage_grows_with_entropy_and_ties_share_a_stage():
    values = [1.0, 1.0, 1.0, 2.0, 5.0, 4.0]
    ids = ["f", "e", "d", "c", "b", "a"]
    order, stage = order_pairs(values, ids, "buckets:2", seed=0)
    # average ranks 2,2,2,4,6,5 -> stage floor(2 * (r - 0.5) / 6): 0,0,0,1,1,1
    assert stage.tolist() == [0, 0, 0, 1, 1, 1]
    rng = np.random.default_rng(0)
    stage0 = np.array(["d", "e", "f"])[rng.permutation(3)].tolist()   # rows of stage 0 sorted by id
    stage1 = np.array(["a", "b", "c"])[rng.permutation(3)].tolist()
    expected = {name: pos for pos, name in enumerate(stage0 + stage1)}
    assert {i: int(o) for i, o in zip(ids, order)} == expected


def test_buckets_with_undefined_values_go_to_the_last_stage():
    _, stage = order_pairs([0.1, NAN, 0.2, 0.3], ["a", "b", "c", "d"], "buckets:4")
    assert stage.tolist() == [0, 3, 1, 2]
    _, stage = order_pairs([0.1, NAN, 0.2, 0.3], ["a", "b", "c", "d"], "buckets:4", missing="lowest")
    assert stage.tolist() == [1, 0, 2, 3]


def test_quantile_bins_equal_counts_for_distinct_values():
    values = np.random.default_rng(1).permutation(10).astype(float)
    bins = quantile_bins(values, 5)
    assert np.bincount(bins).tolist() == [2, 2, 2, 2, 2]
    assert all(bins[values.argsort()] == np.repeat(np.arange(5), 2))


def test_bad_orderings_and_duplicate_ids_are_rejected():
    for bad in ("sideways", "buckets:0", "buckets:x"):
        with pytest.raises(ValueError, match="ordering"):
            order_pairs([1.0], ["a"], bad)
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        order_pairs([1.0, 2.0], ["a", "a"], "ascending")


def test_sequence_by_order_sorts_by_the_order_column():
    rows = [{"id": "x", "order": 2}, {"id": "y", "order": 0}, {"id": "z", "order": 1}]
    assert [rows[i]["id"] for i in sequence_by_order([r["order"] for r in rows])] == ["y", "z", "x"]
    assert sequence_by_order([None, None]) is None   # no order column: the RL stage keeps file order
    with pytest.raises(DataError, match="f.parquet:1: field 'order' missing on this row"):
        sequence_by_order([2, None], "f.parquet")
    with pytest.raises(DataError, match="field 'order' value 3 appears more than once"):
        sequence_by_order([3, 0, 3])


@pytest.mark.parametrize("orders, got", [(["2", "0", "1"], "'2' (str)"), ([0, 1.5, 2], "1.5 (float)"),
                                         ([True, False, 2], "True (bool)"), ([0, float("nan"), 1], "nan (float)")])
def test_order_column_of_the_wrong_type_names_the_row(orders, got):
    with pytest.raises(DataError, match=r"sel.parquet:\d: field 'order' expected an integer position, got " + re.escape(got)):
        sequence_by_order(orders, "sel.parquet")
    assert sequence_by_order([2.0, 0, np.int64(1)], "sel.parquet") == [1, 2, 0]
