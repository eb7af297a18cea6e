"""egt.core.files: atomic strict JSON, the append-only journal, unique ids."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from egt.core import files
from egt.core.errors import DataError


def test_write_json_is_strict_and_atomic(tmp_path):
    path = files.write_json({"nan": math.nan, "inf": -math.inf, "np": np.float32(0.5), "int": np.int64(3),
                          "arr": np.array([1.0, np.nan]), "flag": np.bool_(True), "path": Path("a/b"),
                          "nested": [{"x": float("nan")}]}, tmp_path / "sub" / "out.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "np": 0.5, "int": 3, "arr": [1.0, None], "flag": True,
                                "path": "a/b", "nested": [{"x": None}]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]   # no temp file left behind
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(TypeError):
        files.write_json({"x": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    assert files.write_json({"b": 1, "a": 2}, tmp_path / "s.json", sort_keys=True).read_text().index('"a"') < \
        (tmp_path / "s.json").read_text().index('"b"')


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        files.read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        files.read_json(tmp_path / "bad.json")


def test_journal_appends_are_fsynced_and_read_back(tmp_path, monkeypatch):
    synced = []
    real_fsync = files.os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    journal = files.Journal(tmp_path / "j.jsonl", key="id")
    assert journal.read() == [] and journal.load() == {}
    journal.append([{"id": "a", "v": 1}, {"id": "b", "v": math.nan}])
    journal.append([])
    journal.append([{"id": "a", "v": 3}])
    assert len(synced) == 2  # one fsync per non-empty append
    assert journal.read() == [{"id": "a", "v": 1}, {"id": "b", "v": None}, {"id": "a", "v": 3}]
    assert journal.load() == {"a": {"id": "a", "v": 3}, "b": {"id": "b", "v": None}}  # later records win


def test_journal_cuts_off_a_torn_last_line_only(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = files.Journal(path, key="id")
    journal.append([{"id": "a"}, {"id": "b"}])
    good = path.read_bytes()
    for torn in (b'{"id": "c', b'{"id": "c"}', b'\x00\x00\x00\n'):   # cut mid-line, before the newline, garbage
        path.write_bytes(good + torn)
        assert [r["id"] for r in journal.read()] == ["a", "b"]
        assert path.read_bytes() == good  # cut off, so the next append starts on a clean line
    journal.append([{"id": "c"}])
    assert list(journal.load()) == ["a", "b", "c"]
    path.write_bytes(good.replace(b'{"id": "b"}', b'{"id": oops') + b'{"id": "c"}\n')
    with pytest.raises(DataError, match="j.jsonl:2: corrupt"):  # finished work after it: never dropped silently
        journal.read()
    path.write_text('{"id": "a"}\n[1, 2]\n{"id": "b"}\n')
    with pytest.raises(DataError, match="j.jsonl:2"):
        journal.read()
    path.write_text('{"id": "a"}\n{"other": 1}\n')
    with pytest.raises(DataError, match="j.jsonl:2: field 'id'"):
        journal.load()


def test_journal_rewrite_replaces_atomically(tmp_path):
    journal = files.Journal(tmp_path / "j.jsonl")
    journal.append([{"step": 1}, {"step": 2}, {"step": 3}])
    journal.rewrite([r for r in journal.read() if r["step"] <= 2])
    assert journal.read() == [{"step": 1}, {"step": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.jsonl"]
    with pytest.raises(ValueError, match="key"):
        journal.load()


def test_check_unique_ids_names_both_places(tmp_path):
    files.check_unique_ids(["a", "b"], "f.parquet")
    with pytest.raises(DataError, match=r"f.parquet:2: field 'id' duplicate id 'a' \(first at row 0\)"):
        files.check_unique_ids(["a", "b", "a"], "f.parquet")
    with pytest.raises(DataError, match=r"f.jsonl:7: field 'id' duplicate id 'x' \(first at line 3\)"):
        files.check_unique_ids(["x", "x"], "f.jsonl", lines=[3, 7], unit="line")


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert files.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_batches_to_run_are_fixed_positions_and_a_partial_batch_runs_again_whole():
    from egt.core.files import batches_to_run

    keys = [f"k{i}" for i in range(10)]
    assert batches_to_run(keys, set(), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches_to_run(keys, {"k0", "k1", "k2", "k3", "k4"}, 4) == [[4, 5, 6, 7], [8, 9]]   # k4 alone: whole batch
    assert batches_to_run(keys, set(keys), 4) == []
    assert batches_to_run(keys, {"k8", "k9"}, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError):
        batches_to_run(keys, set(), 0)
