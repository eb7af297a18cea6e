"""egt.core.runfolder: fingerprints that name what changed, claims that never mix or block, one writer per folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from egt.core import runfolder
from egt.core.files import TEMP_SUFFIX, write_text
from egt.core.runfolder import RunLocked, StaleRunError, claim, fingerprint, run_lock

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _model(folder, weights: bytes = b"\x00" * 64):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "x"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / ".cache").mkdir(exist_ok=True)
    (folder / ".cache" / "ignored").write_text("not part of the model")
    return folder


def test_fingerprint_hashes_contents_not_sizes(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("a\n")
    model = _model(tmp_path / "model")
    first = fingerprint(inputs={"pairs": data}, models={"model": model}, settings={"samples": 2})
    assert set(first["models"]["model"]["files"]) == {"config.json", "model.safetensors"}  # hidden files skipped
    (model / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 63)    # same size, other weights
    data.write_text("b\n")
    second = fingerprint(inputs={"pairs": data}, models={"model": model}, settings={"samples": 3})
    diffs = runfolder.differences(first, second)
    assert [d.split(":")[0] for d in diffs] == ["input pairs", "model file model.safetensors", "setting samples"]
    assert diffs[-1] == "setting samples: 2 -> 3"
    assert fingerprint(inputs={"x": tmp_path / "missing"})["inputs"]["x"] == {"absent": str(tmp_path / "missing")}
    assert fingerprint(models={"m": "org/hub-model"})["models"]["m"] == {"name": "org/hub-model"}


def test_claim_new_same_replaced_refused_overwritten(tmp_path):
    out = tmp_path / "run"
    results = {"done": False}

    def claim_with(settings, overwrite=False):
        return claim(out, fingerprint(settings=settings), stage="score", owned=["shards", "scores.parquet"],
                     has_results=lambda: results["done"], overwrite=overwrite)

    assert claim_with({"seed": 0}) == "new"
    assert claim_with({"seed": 0}) == "same"
    (out / "shards").mkdir()
    (out / "shards" / "shard-0.parquet").write_text("partial, no marker")
    # a failed run (no results yet) never blocks its corrected rerun: its files are removed
    assert claim_with({"seed": 1}) == "replaced" and not (out / "shards").exists()
    results["done"] = True
    write_text("scores", out / "scores.parquet")
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(StaleRunError, match=r"holds score results of other inputs or settings "
                                            r"\(setting seed: 1 -> 2\).*--overwrite"):
        claim_with({"seed": 2})
    assert (out / "scores.parquet").exists()
    assert claim_with({"seed": 2}, overwrite=True) == "overwritten"
    assert not (out / "scores.parquet").exists() and (out / "notes.txt").exists()  # only owned files go
    assert json.loads((out / runfolder.FINGERPRINT).read_text())["settings"] == {"seed": 2}


def test_claim_refuses_results_without_a_fingerprint(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "model").mkdir()
    with pytest.raises(StaleRunError, match="without a fingerprint"):
        claim(out, fingerprint(settings={}), stage="sft", owned=["model"], has_results=True)
    assert claim(out, fingerprint(settings={}), stage="sft", owned=["model"], has_results=True,
                 overwrite=True) == "overwritten"


def _hold_lock_in_a_subprocess(out):
    code = ("import time\nfrom egt.core.runfolder import run_lock\n"
            f"with run_lock({str(out)!r}, 'eval'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_live_writer_refused_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = _hold_lock_in_a_subprocess(out)
    try:
        with pytest.raises(RunLocked, match=rf"in use by egt eval \(pid {holder.pid} on {socket.gethostname()} since"):
            with run_lock(out, "score"):
                pass
    finally:
        holder.kill()  # SIGKILL: no release, the lock file stays
        holder.wait()
    assert json.loads((out / runfolder.LOCK).read_text())["pid"] == holder.pid
    (out / f".scores.parquet.abc{TEMP_SUFFIX}").write_text("a write cut off by the kill")
    (out / "sub").mkdir()
    (out / "sub" / f".x.json.def{TEMP_SUFFIX}").write_text("")
    (out / "other_run").mkdir()                              # another run's folder inside this one
    (out / "other_run" / runfolder.LOCK).write_text("{}")
    (out / "other_run" / f".y.json.ghi{TEMP_SUFFIX}").write_text("being written")
    with run_lock(out, "score") as lock:
        assert lock.took_over["pid"] == holder.pid
        assert json.loads((out / runfolder.LOCK).read_text())["pid"] == os.getpid()
        # a killed writer's temp files are gone; another run's are left alone
        assert list(out.rglob(f"*{TEMP_SUFFIX}")) == [out / "other_run" / f".y.json.ghi{TEMP_SUFFIX}"]
        with run_lock(out, "score"):                        # the same process may nest
            pass
        assert (out / runfolder.LOCK).exists()
    assert not (out / runfolder.LOCK).exists()              # released


def test_pid_fallback_without_flock(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / runfolder.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                 "stage": "sft"}))
    lock = runfolder.RunLock(out, "sft")
    assert lock._acquire_by_pid({"pid": os.getpid(), "host": socket.gethostname(), "stage": "sft"}) is lock
    assert lock.took_over["pid"] == int(dead.stdout)
    lock.release()
    (out / runfolder.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "stage": "sft"}))
    with pytest.raises(RunLocked, match=f"pid 1 on elsewhere.*delete {out / runfolder.LOCK}"):
        runfolder.RunLock(out, "sft")._acquire_by_pid({"pid": os.getpid(), "host": socket.gethostname()})


def test_pipeline_keeps_one_fingerprint_per_stage_in_a_shared_folder(tmp_path):
    """The pattern `egt demo` uses: one lock on the run folder, one fingerprint per stage under stages/."""
    run = tmp_path / "demo"

    def stage(name, settings, overwrite=False):
        marker = run / "stages" / f"{name}.json"
        status = claim(run, fingerprint(settings=settings), stage=name, owned=[name, f"stages/{name}.json"],
                       has_results=marker.exists, overwrite=overwrite,
                       fingerprint_file=f"stages/{name}.fingerprint.json")
        if status != "same" or not marker.exists():
            write_text("out", run / name / "out.txt")
            write_text("{}", marker)
        return status

    with run_lock(run, "demo"):
        assert [stage("data", {"noise": 0.3}), stage("score", {"samples": 4})] == ["new", "new"]
        assert [stage("data", {"noise": 0.3}), stage("score", {"samples": 4})] == ["same", "same"]
        with pytest.raises(StaleRunError, match=r"holds data results .*setting noise: 0\.3 -> 0\.5"):
            stage("data", {"noise": 0.5})
        assert stage("data", {"noise": 0.5}, overwrite=True) == "overwritten"
        assert stage("score", {"samples": 4}) == "same"   # (the demo puts upstream output hashes in inputs)
