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


def egt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EGT), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


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
