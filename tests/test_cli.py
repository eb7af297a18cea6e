"""The real console script: help lists every stage; bad input exits 1 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from egt import cli

EGT = Path(sys.executable).parent / "egt"
pytestmark = pytest.mark.skipif(not EGT.exists(), reason=f"console script not installed at {EGT}")


def egt(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(EGT), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_help_lists_every_command():
    root = egt("--help")
    assert root.returncode == 0
    for name in [s.name for s in cli.TOP] + ["data", "model"]:
        assert f"  {name} " in root.stdout, name
    for group, stages in (("data", cli.DATA), ("model", cli.MODEL)):
        out = egt(group, "--help")
        assert out.returncode == 0
        for stage in stages:
            assert f"  {stage.name} " in out.stdout and stage.summary in out.stdout


def test_stage_help_lists_config_keys():
    out = egt("data", "convert", "--help")
    assert out.returncode == 0
    for key in ("format", "input", "output", "image_root", "on_error", "swap", "column_map"):
        assert f"  {key} (" in out.stdout


def test_version():
    out = egt("--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout


def test_bad_data_exits_1_without_traceback(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": "a", "question": "Q", "response_1": "x", "response_2": "y", "label": 1}\n{"id": \n')
    out = egt("data", "convert", "--format", "pairs", "--input", str(src), "--output", str(tmp_path / "o.parquet"))
    assert out.returncode == 1
    assert f"error: {src}:2:" in out.stderr and "invalid JSON" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_wrong_format_and_bad_config_exit_1(tmp_path):
    src = tmp_path / "all_data.json"
    src.write_text(json.dumps([{"ID": "a", "Text": "Q", "Image": "i.png", "Output1": "x", "Output2": "y",
                                "Better": "Output1", "Meta": {"Category": "vqa"}}]))
    out = egt("data", "convert", "--format", "mmrlhf", "--input", str(src), "--output", str(tmp_path / "o.parquet"))
    assert out.returncode == 1 and "not a mmrlhf file" in out.stderr and "--format mmrb" in out.stderr
    out = egt("data", "convert", "--format", "nope", "--input", str(src), "--output", "o.parquet", "--swap")
    assert out.returncode == 1 and "'format'" in out.stderr and "Traceback" not in out.stderr
    out = egt("data", "convert", "--input", str(src), "--output", "o.parquet", "--colum-map", "{}")
    assert out.returncode == 1 and "unknown key 'colum_map'" in out.stderr
    out = egt("data", "inspect", str(tmp_path / "missing.parquet"))
    assert out.returncode == 1 and "file not found" in out.stderr and "Traceback" not in out.stderr


def test_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "egt.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "distill" in out.stdout


@pytest.mark.parametrize("stage", ["score", "eval"])
def test_dtype_typo_is_a_one_line_config_error(tmp_path, stage):
    args = ["--model", str(tmp_path / "m"), "--output", str(tmp_path / "o"), "--dtype", "bfloat61"]
    args += ["--pairs", str(tmp_path / "p.parquet")] if stage == "score" else \
        ["--benchmark", "synthetic", "--data", str(tmp_path / "p.parquet")]
    out = egt(stage, *args)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    module = "score" if stage == "score" else "evaluate"
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: invalid {module} config (command line): ")
    assert "'dtype'" in out.stderr and "bfloat61" in out.stderr and "float32, bfloat16, float16" in out.stderr


# ---------------------------------------------------------------- faults answer with one line

def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The one `error: ...` line (the last of stderr: progress bars may precede it); no traceback."""
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.rstrip("\n").split("\n")
    assert lines[-1].startswith("error: ") and sum("error" in line for line in lines) == 1, out.stderr[-2000:]
    return lines[-1]


def test_debug_flag_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.parquet"
    assert one_line_error(egt("data", "inspect", str(missing))) == f"error: {missing}: file not found"
    out = egt("--debug", "data", "inspect", str(missing))
    assert out.returncode != 0 and "Traceback" in out.stderr and "DataError" in out.stderr
    out = egt("data", "inspect", str(missing), "--debug")       # anywhere on the line
    assert "Traceback" in out.stderr
    assert "--debug" in egt("--help").stdout


@pytest.mark.parametrize("fault", ["missing", "truncated", "no_config"])
def test_model_faults_name_the_file(tmp_path, tiny_model_dir, synth_pairs, fault):
    import shutil

    model = tmp_path / "model"
    if fault != "missing":
        shutil.copytree(tiny_model_dir, model)
    if fault == "truncated":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    if fault == "no_config":
        (model / "config.json").unlink()
    line = one_line_error(egt("score", "--model", str(model), "--pairs", str(synth_pairs),
                              "--output", str(tmp_path / "out")))
    expected = {"missing": f"error: {model}: model folder not found",
                "truncated": f"error: {model / 'model.safetensors'}: not a readable safetensors file",
                "no_config": f"error: {model}: not a model folder, no config.json (build one"}[fault]
    assert line.startswith(expected) and line.endswith(")")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (skipped where mounting is not permitted, e.g. without root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_read_only_output_is_one_line(small_disk, synth_pairs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = one_line_error(egt("data", "synth", "--n", "4", "--output", str(small_disk / "x" / "pairs.parquet")))
    assert line.startswith(f"error: {small_disk}") and line.endswith(
        ": Read-only file system (read-only file system: choose an output folder you can write)")
    line = one_line_error(egt("data", "inspect", str(synth_pairs), "--summary", str(small_disk / "summary.json")))
    assert line.startswith(f"error: {small_disk / 'summary.json'}: Read-only file system (read-only")


@pytest.mark.slow
def test_full_disk_is_one_line_leaves_no_temp_files_and_resumes(small_disk, tiny_model_dir, synth_pairs_path):
    from egt.core.records import read_rows

    pairs = synth_pairs_path("pool", 6, 0, "ambiguity:0.25")
    out = small_disk / "score"
    args = ["score", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--output", str(out), "--samples", "2",
            "--max_new_tokens", "24", "--batch_size", "2", "--shard_size", "1", "--progress", "false"]
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:   # leave ~24 KiB: room for the fingerprint and a shard or two
        free = __import__("os").statvfs(small_disk)
        handle.write(b"\0" * (free.f_bavail * free.f_frsize - 24 * 1024))
    line = one_line_error(egt(*args, timeout=600))
    assert "No space left on device (the disk is full: free space or write to another folder, then rerun to resume)" \
        in line and line.startswith(f"error: {out}")
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".egt-tmp")]
    finished = len(list((out / "shards").glob("*.done"))) if (out / "shards").exists() else 0
    assert finished < 6
    filler.unlink()
    assert egt(*args, timeout=600).returncode == 0
    assert len(read_rows(out / "scores.parquet")) == 6
