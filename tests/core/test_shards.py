"""egt.core.shards and the shard side of egt.core.runfolder: slices from i/n, SLURM and torchrun variables;
per-slice locks that let independent jobs share a folder, refuse a second job of the same slice, a job
splitting the folder another way, a job of other settings and a whole-folder run while jobs are live."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from egt.core import runfolder
from egt.core.errors import ConfigError
from egt.core.files import Journal
from egt.core.runfolder import RunLocked, StaleRunError, fingerprint, live_shard_jobs, open_run_folder
from egt.core.shards import ALL, Shard, blocks, fold_journals, load_all, parse_shard, slot_journal, slot_journals

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_parse_shard_from_text_slurm_and_torchrun_variables():
    assert parse_shard(None) is None and parse_shard("") is None
    assert parse_shard("2/8") == Shard(2, 8) and parse_shard(" 0 / 1 ") == ALL
    for bad in ("8/8", "1/0", "-1/3", "a/b", "1", "slurm:3"):
        with pytest.raises(ConfigError, match="shard="):
            parse_shard(bad)
    # --array=1-8: ids 1..8, min 1, count 8 -> 0..7 of 8; --array=0-15:4 -> ids 0,4,8,12: 0..3 of 4
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1",
                                 "SLURM_ARRAY_TASK_COUNT": "8"}) == Shard(0, 8)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "1",
                                 "SLURM_ARRAY_TASK_MAX": "8"}) == Shard(7, 8)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "15",
                                 "SLURM_ARRAY_TASK_STEP": "4"}) == Shard(3, 4)
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_ID is not set"):
        parse_shard("slurm", {})
    with pytest.raises(ConfigError, match="not a range"):   # --array=1,3,7: give i/n
        parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"})
    assert parse_shard("env", {"RANK": "3", "WORLD_SIZE": "4"}) == Shard(3, 4)
    with pytest.raises(ConfigError, match="RANK and WORLD_SIZE"):
        parse_shard("env", {"RANK": "0"})


def test_slots_of_jobs_and_ranks_cover_every_unit_once():
    units = range(60)
    worlds = {0: 2, 1: 1, 2: 3}           # three jobs launched as worlds of 2, 1 and 3 processes
    slots = [Shard(i, 3).within(rank, w) for i, w in worlds.items() for rank in range(w)]
    owned = sorted(u for slot in slots for u in slot.take(units))
    assert owned == list(units)            # every unit once: a job's ranks split exactly that job's units
    assert ALL.within(1, 4) == Shard(1, 4)   # a plain launched world: rank r of w, as before
    assert [list(b) for b in blocks(5, 2)] == [[0, 1], [2, 3], [4]]


def test_slot_journals_fold_into_the_one_process_log(tmp_path):
    main = Journal(tmp_path / "judgements.jsonl", key="key")
    main.append([{"key": "b", "v": 0}])                       # an earlier run's record keeps its place
    Journal(slot_journal(tmp_path, "judgements.jsonl", Shard(1, 2)), key="key").append([{"key": "c", "v": 1},
                                                                                       {"key": "b", "v": 1}])
    other = slot_journal(tmp_path, "judgements.jsonl", Shard(0, 2))
    Journal(other, key="key").append([{"key": "a", "v": 1}])
    with open(other, "ab") as handle:
        handle.write(b'{"key": "torn')                        # a job writing right now
    assert [p.name for p in slot_journals(tmp_path, "judgements.jsonl")] == ["judgements.0-of-2.jsonl",
                                                                             "judgements.1-of-2.jsonl"]
    merged = load_all(tmp_path, "judgements.jsonl", "key", own=None)
    assert merged == {"b": {"key": "b", "v": 1}, "a": {"key": "a", "v": 1}, "c": {"key": "c", "v": 1}}
    assert other.read_bytes().endswith(b'{"key": "torn')     # another job's journal is never cut
    fold_journals(tmp_path, "judgements.jsonl", "key", order=["a", "b", "c"])
    assert main.read() == [{"key": "b", "v": 1}, {"key": "a", "v": 1}, {"key": "c", "v": 1}]
    assert not slot_journals(tmp_path, "judgements.jsonl")


HOLD = """
import sys, time
from egt.core.runfolder import fingerprint, open_run_folder
from egt.core.shards import parse_shard
with open_run_folder(sys.argv[1], "score", fingerprint=fingerprint(settings={"seed": int(sys.argv[3])}),
                     owned=["shards"], has_results=False, shard=parse_shard(sys.argv[2])):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(out, shard: str, seed: int = 0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), shard, str(seed)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def test_shard_jobs_share_a_folder_and_refuse_what_would_mix(tmp_path):
    out = tmp_path / "run"
    current = fingerprint(settings={"seed": 0})

    def job(shard, settings=None, **kw):
        return open_run_folder(out, "score", fingerprint=fingerprint(settings=settings or {"seed": 0}),
                               owned=["shards"], has_results=lambda: (out / "shards").exists(), shard=shard, **kw)

    first = _hold(out, "0/3")
    try:
        assert [j["shard"] for j in live_shard_jobs(out)] == ["0/3"]
        with job(Shard(1, 3)) as status:                      # another slice of the same work: goes on
            assert status == "same" and len(live_shard_jobs(out)) == 2
            (out / "shards").mkdir()
        with pytest.raises(RunLocked, match=r"slice 0/3 is already being run by egt score \(pid \d+"):
            with job(Shard(0, 3)):
                pass
        with pytest.raises(RunLocked, match=r"split into 3 slices by live shard jobs .* slice 1/4: use the same n"):
            with job(Shard(1, 4)):
                pass
        with pytest.raises(RunLocked, match=r"shard jobs of other inputs or settings are running"):
            with job(Shard(2, 3), {"seed": 1}, overwrite=True):
                pass
        with pytest.raises(RunLocked, match=r"in use by shard jobs: shard 0/3 \(score \(pid"):
            with open_run_folder(out, "score", fingerprint=current, owned=["shards"], has_results=True):
                pass
    finally:
        first.kill()
        first.wait()
    assert live_shard_jobs(out) == []                         # a killed job's lock is stale
    # overwrite in a shard job never discards work of this fingerprint (it may be another job's) ...
    with job(Shard(2, 3), overwrite=True) as status:
        assert status == "same" and (out / "shards").exists()
    # ... only work of other settings, refused without it
    with pytest.raises(StaleRunError, match=r"setting seed: 0 -> 1"):
        with job(Shard(2, 3), {"seed": 1}):
            pass
    with job(Shard(2, 3), {"seed": 1}, overwrite=True) as status:
        assert status == "overwritten" and not (out / "shards").exists()
    with open_run_folder(out, "score"):                      # no live job: a whole-folder run may go on
        assert runfolder.read_fingerprint(out)["settings"] == {"seed": 1}
