"""The records of a source file, and the ids they repeat (used by egt.data.readers).

`iter_records(path)` yields (position, row) for every record of a JSONL file, a JSON
array, a Parquet file or a `datasets.save_to_disk` folder: JSONL by 1-based line
number, the others by 0-based row index (as egt.core.records.read_pairs counts). A record
that cannot be parsed is yielded as its DataError so the caller can stop or skip it.

`RepeatedIds.find` groups the rows by their source id: a row identical in every field to
an earlier one is a true duplicate; rows that share an id but differ are distinct items
and get an index k for the id `<id>#k` (the policy is in egt.data.readers).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from egt.core.errors import DataError

# ------------------------------------------------------------------ records

def is_json_array(path: Path) -> bool:
    """A .json file holding one JSON array (else .json is read as JSON lines)."""
    if path.suffix.lower() != ".json":
        return False
    with open(path, "rb") as handle:
        return handle.read(65536).lstrip()[:1] == b"["


def iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (JSONL line number or 0-based row index, row or DataError) for every record."""
    file = str(path)
    if path.is_dir():
        yield from iter_dataset(path)
        return
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(file, None, None, f"not a readable Parquet file ({exc})") from None
        for i, row in enumerate(table.to_pylist()):
            yield i, row
        return
    raw = path.read_bytes()
    if is_json_array(path):
        try:
            rows = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise DataError(file, line, None, "file is not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise DataError(file, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
        for i, row in enumerate(rows):
            yield i, row
        return
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield lineno, DataError(file, lineno, None, "line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            yield lineno, DataError(file, lineno, None, f"invalid JSON ({exc.msg})")


def iter_dataset(path: Path) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(str(path), None, None,
                        f"not a dataset saved with datasets.save_to_disk ({exc.__class__.__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(str(path), None, None,
                        f"holds several splits ({', '.join(ds)}); pass one, e.g. --input {path / next(iter(ds))}")
    # arrow format keeps Image columns as raw {bytes, path}: nothing is decoded here
    rows = (r for t in ds.with_format("arrow").iter(batch_size=256) for r in t.to_pylist())
    yield from enumerate(rows)


# ------------------------------------------------------------------ repeated ids

def row_fingerprint(row: dict) -> str:
    """Digest of every field of a source row (embedded bytes by their own digest)."""
    def default(value):
        if isinstance(value, (bytes, bytearray)):
            return "sha256:" + hashlib.sha256(value).hexdigest()
        return repr(value)

    text = json.dumps(row, sort_keys=True, ensure_ascii=False, default=default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class RepeatedIds:
    identical_to: dict[int, int] = field(default_factory=dict)  # line -> line of the identical earlier row
    index: dict[int, int] = field(default_factory=dict)         # line -> k in `<id>#k`

    @classmethod
    def find(cls, records: list, id_field: str, file: str, unit: str, warnings: list[str]) -> "RepeatedIds":
        """Group the rows by source id: true duplicates, and the distinct rows of repeated ids."""
        found = cls()
        distinct: dict[str, dict[str, int]] = {}  # id -> fingerprint -> first line, in file order
        for line, row in records:
            if not isinstance(row, dict):
                continue
            value = row.get(id_field)
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
                continue
            rows = distinct.setdefault(str(value), {})
            digest = row_fingerprint(row)
            if digest in rows:
                found.identical_to[line] = rows[digest]
            else:
                rows[digest] = line
        repeated = {pair_id: rows for pair_id, rows in distinct.items() if len(rows) > 1}
        for rows in repeated.values():
            for k, line in enumerate(rows.values()):
                found.index[line] = k
        if repeated:
            example, rows = next(iter(repeated.items()))
            warnings.append(
                f"{file}: {len(repeated)} id(s) are shared by {len(found.index)} rows that differ (e.g. "
                f"'{example}' at {unit}s {', '.join(str(line) for line in rows.values())}); all are kept, each as "
                f"'<id>#k' (k = 0, 1, ... in file order) with meta.original_id = the source id")
        return found
