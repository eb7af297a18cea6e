"""Files every stage writes the same way: atomic replacement, strict JSON, append-only journals, ids.

- `atomic_write_bytes` / `write_text` / `write_json`: the file is written beside its
  target, fsynced and renamed over it, so a reader (or a run killed half-way) sees the
  old file or the new one, never a mix. `write_json` is strict: numpy scalars and arrays
  become plain numbers and lists, paths strings, and NaN or +-inf become `null`
  (`json_ready`) -- a bare `NaN` is not JSON and other readers reject it.
- `Journal`: an append-only JSONL file of finished work (distill's journal.jsonl,
  eval's judgements.jsonl, rl's consumed.jsonl). Each append is one write, flushed and
  fsynced before it returns, so after `kill -9` at most the records being written are
  lost. Reading tolerates a torn last line (a write cut off by a kill) and cuts it off the
  file, so the next append starts on a clean line; a corrupt line anywhere else is a
  DataError naming the file and line, because silently dropping finished work there
  would hide a real problem.
- `batches_to_run`: fixed batches over a run's work, so that a resumed run redoes a partly written batch
  whole and forms the same batches as an uninterrupted one (eval, judge, rerank).
- `check_unique_ids`: the one check that a file's pair ids are unique.
- `sha256_file`: input fingerprints (egt.core.runfolder, curate manifests).
- Temp files are named `.<target name>.<random>` + `TEMP_SUFFIX`, so a run that takes a folder's lock
  (egt.core.runfolder) can find and delete the ones a killed writer left; a failed write deletes its own.

Nothing here knows about pairs or stages; `egt.core.records` reads and writes pair files on top of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Container, Iterable, Sequence

import numpy as np

from egt.core.errors import DataError

TEMP_SUFFIX = ".egt-tmp"


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    """Replace `path` with `data` atomically (temp file in the same folder, fsync, rename).

    `fsync=False` skips the flush to disk (the rename stays atomic): for many small files that a
    rerun regenerates anyway, e.g. synthetic images, where one fsync each costs ~5 ms."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:  # it names the temp file; the user knows the target
        raise named_os_error(exc, path, replace=True) from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise named_os_error(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def named_os_error(exc: OSError, path: str | Path, replace: bool = False) -> OSError:
    """The same error naming `path` (a write through a file handle names no file: a full disk would
    then say only "No space left on device"); errors that name a file are kept unless `replace`."""
    if exc.errno is None or (exc.filename is not None and not replace):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def write_text(text: str, path: str | Path) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_ready(value: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists, Path -> str, NaN/+-inf -> None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(data: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of `data` (see `json_ready`); raises TypeError for values JSON cannot hold."""
    return json.dumps(json_ready(data), indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)


def write_json(data: Any, path: str | Path, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write strict JSON atomically; NaN and +-inf are written as null, never as bare NaN."""
    return write_text(json_text(data, indent, sort_keys) + "\n", path)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or invalid file is a DataError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(str(path), None, None, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(str(path), None, None, f"not valid JSON ({exc})") from None


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks (input fingerprints, manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def batches_to_run(keys: Sequence[str], done: Container[str], size: int) -> list[list[int]]:
    """Positions (into `keys`) of the batches still to run, for work that a Journal records batch by batch.

    The batches are fixed: `keys` cut into runs of `size` from its start, whatever is done. A batch whose
    keys are all in `done` is skipped; one left partly done (a kill while its records were being written,
    a torn line) is run again whole. So a resumed run judges exactly the batches an uninterrupted run
    judges -- which matters because a batch's composition changes its padding, hence the last bits of its
    logits and entropies (~1e-7) -- and its records, appended again, replace the earlier ones (Journal.load).
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    batches = [list(range(start, min(start + size, len(keys)))) for start in range(0, len(keys), size)]
    return [batch for batch in batches if not all(keys[i] in done for i in batch)]


def check_unique_ids(ids: Iterable[str], file: str | Path, lines: Sequence[int] | None = None,
                     unit: str = "row") -> None:
    """DataError at the second occurrence of an id, naming where the first one is.

    `lines[i]` is where record i sits in `file` (default: its 0-based index, as egt numbers
    Parquet rows); `unit` names that position in the message ("row" or "line").
    """
    first: dict[str, int] = {}
    for index, pair_id in enumerate(ids):
        where = lines[index] if lines is not None else index
        if pair_id in first:
            raise DataError(str(file), where, "id", f"duplicate id '{pair_id}' (first at {unit} {first[pair_id]})")
        first[pair_id] = where


class Journal:
    """Append-only JSONL of finished records; see the module docstring for the guarantees.

    `key` names the field that identifies a record for `load()` (later records win).
    Appends from several threads of one process are serialised; one process writes a journal.
    """

    def __init__(self, path: str | Path, key: str | None = None):
        self.path = Path(path)
        self.key = key
        self._lock = threading.Lock()

    def read(self, repair: bool = True) -> list[dict]:
        """Every record in file order; a torn last line is cut off the file (it is redone). `repair=False`
        leaves the file alone (another process's journal, which it may be appending to right now)."""
        return [record for _, record in self._numbered(repair)]

    def load(self, repair: bool = True) -> dict[str, dict]:
        """Records by their `key` field (the journal must have been opened with one); `repair` as `read`."""
        if self.key is None:
            raise ValueError("Journal.load needs the key field given to Journal(path, key=...)")
        out: dict[str, dict] = {}
        for lineno, record in self._numbered(repair):
            value = record.get(self.key)
            if not isinstance(value, str):
                raise DataError(str(self.path), lineno, self.key,
                                "journal record without its key; delete the file to redo the work")
            out[value] = record
        return out

    def _numbered(self, repair: bool = True) -> list[tuple[int, dict]]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.splitlines(keepends=True)
        records, good_end = [], 0
        for lineno, line in enumerate(lines, start=1):
            last = lineno == len(lines)
            if not line.strip():
                good_end += len(line)
                continue
            try:
                # A last line without its newline was cut off mid-write, even if it happens to parse.
                record = json.loads(line) if line.endswith(b"\n") or not last else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict):
                if last:
                    break  # torn: a kill while this line was being written
                raise DataError(str(self.path), lineno, None,
                                "corrupt journal record (not a JSON object); delete the file to redo the work")
            records.append((lineno, record))
            good_end += len(line)
        if good_end < len(raw) and repair:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return records

    def append(self, records: Sequence[dict]) -> None:
        """Append records as one write, flushed and fsynced before returning."""
        if not records:
            return
        data = "".join(json_text(r, indent=None) + "\n" for r in records).encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(self.path, "ab") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:  # a part written before a full disk is a torn last line: redone
                raise named_os_error(exc, self.path) from None

    def rewrite(self, records: Sequence[dict]) -> None:
        """Replace the journal with `records`, atomically."""
        with self._lock:
            atomic_write_bytes(self.path, "".join(json_text(r, indent=None) + "\n" for r in records).encode("utf-8"))
