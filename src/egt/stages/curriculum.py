"""Curriculum orderings: the order in which the RL stage sees the curated pairs.

`order_pairs(values, ids, ordering, seed)` returns two integer arrays aligned
with the input rows: `order` (0-based position in the curriculum; the RL stage
consumes rows sorted by it) and `stage` (0 for single-stage orderings, the
entropy bucket for `buckets:k`). `egt curate --order ...` writes them as the
`order` and `stage` columns of selected.parquet.

Orderings:
- `ascending`  — low to high entropy (EGT's curriculum), ties by id;
- `descending` — high to low, ties by id;
- `random`     — a seeded permutation of the rows sorted by id;
- `buckets:k`  — k stages by entropy quantile (stage grows with entropy; equal
  values always share a stage, so stages can be unequal in size), rows shuffled
  inside each stage with the seed.

Undefined values (NaN, e.g. answer entropy without a verdict) rank as the
highest entropy by default (`missing="highest"`), or the lowest. Everything
here is a pure function of (values, ids, seed): the input row order never
changes the result. Departure from the paper: it only describes the ascending
order; the other orderings are the ablations the issue asks for.

`sequence_by_order(orders)` is the other side: the row order in which `egt rl`
consumes a curated file, from its `order` column.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from egt.core.errors import DataError
from egt.core.stats import average_ranks

MISSING_POLICIES = ("highest", "lowest", "drop")


def resolve_missing(values, missing: str = "highest") -> np.ndarray:
    """NaN -> +inf (`highest`) or -inf (`lowest`); `drop` keeps NaN for the caller to remove."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    out = np.asarray(values, dtype=np.float64).copy()
    if missing == "highest":
        out[np.isnan(out)] = np.inf
    elif missing == "lowest":
        out[np.isnan(out)] = -np.inf
    return out


def quantile_bins(values, k: int, missing: str = "highest") -> np.ndarray:
    """Bin index 0..k-1 by rank quantile; equal values share a bin (bins may be unequal).

    With distinct values and n divisible by k every bin holds n/k rows.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    resolved = resolve_missing(values, "highest" if missing == "drop" else missing)
    n = len(resolved)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = average_ranks(resolved)
    return np.minimum(np.floor(k * (ranks - 0.5) / n).astype(np.int64), k - 1)


def _id_sort_keys(ids) -> np.ndarray:
    """Position of each id in sorted-id order (ids must be unique)."""
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"ids must be unique (duplicate id '{dup}')")
    by_id = sorted(range(len(ids)), key=ids.__getitem__)
    keys = np.empty(len(ids), dtype=np.int64)
    keys[by_id] = np.arange(len(ids))
    return keys


def sort_by_value(values, ids, descending: bool = False, missing: str = "highest") -> np.ndarray:
    """Row indices sorted by value (ties by id, ascending), NaN placed per `missing`."""
    resolved = resolve_missing(values, "highest" if missing == "drop" else missing)
    id_keys = _id_sort_keys(ids)
    primary = -resolved if descending else resolved
    return np.lexsort((id_keys, primary))


def parse_ordering(ordering: str) -> tuple[str, int]:
    """'ascending' -> ('ascending', 1); 'buckets:4' -> ('buckets', 4)."""
    if ordering in ("ascending", "descending", "random"):
        return ordering, 1
    if ordering.startswith("buckets:"):
        try:
            k = int(ordering.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return "buckets", k
    raise ValueError(f"ordering must be ascending, descending, random or buckets:K (K >= 1), got {ordering!r}")


def order_pairs(values, ids, ordering: str = "ascending", seed: int = 0,
                missing: str = "highest") -> tuple[np.ndarray, np.ndarray]:
    """(order, stage) int64 arrays aligned with the rows; see the module docstring."""
    kind, k = parse_ordering(ordering)
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if len(ids) != n:
        raise ValueError(f"{n} values but {len(ids)} ids")
    stage = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if kind in ("ascending", "descending"):
        sequence = sort_by_value(values, ids, descending=kind == "descending", missing=missing)
    elif kind == "random":
        by_id = np.argsort(_id_sort_keys(ids), kind="stable")
        sequence = by_id[rng.permutation(n)]
    else:
        stage = quantile_bins(values, k, missing)
        by_id = np.argsort(_id_sort_keys(ids), kind="stable")
        parts = []
        for s in range(k):
            members = by_id[stage[by_id] == s]
            parts.append(members[rng.permutation(len(members))])
        sequence = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    order[sequence] = np.arange(n)
    return order, stage


def sequence_by_order(orders: Sequence, file: str = "<rows>") -> list[int] | None:
    """Row indices sorted by their `order` value; None when no row has one (use file order).

    DataError naming the row when only some rows have an order or a value repeats.
    """
    has_order = [o is not None for o in orders]
    if not any(has_order):
        return None
    if not all(has_order):
        row = has_order.index(False)
        raise DataError(file, row, "order", "missing on this row but present on others")
    values = []
    for row, value in enumerate(orders):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not float(value).is_integer():
            raise DataError(file, row, "order", f"expected an integer position, got {value!r} "
                                                f"({type(value).__name__})")
        values.append(int(value))
    first: dict[int, int] = {}
    for row, value in enumerate(values):
        if value in first:
            raise DataError(file, row, "order", f"value {value} appears more than once (first at row {first[value]})")
        first[value] = row
    return sorted(range(len(values)), key=values.__getitem__)
