"""`egt demo --tiny`: the whole recipe end to end through the CLI, at CI size."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

EGT = [sys.executable, "-m", "egt.cli"]


def test_demo_tiny_runs_every_stage_writes_the_report_and_resumes(tmp_path):
    out = tmp_path / "demo"
    args = EGT + ["demo", "--tiny", "--output", str(out), "--workers", "2", "--rl_variants", "a_egt", "b_full",
                  "c_random", "d_descending", "--dose-response", "0", "0.3"]
    # kill -9 once SFT is done (inside a later stage), then the same command finishes the run from there
    killed = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "stages" / "sft.json").exists():
        assert killed.poll() is None, killed.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("data", "distill", "sft"):
        assert f"{stage:<8} cached" in first.stdout
    # One line per stage on the terminal.
    for index, stage in enumerate(["data", "distill", "sft", "score", "analyze", "curate", "rl", "eval", "report"], 1):
        assert f"[{index}/9] {stage}" in first.stdout
    report = (out / "report.md").read_text()
    for heading in ("## Setup", "## Stage 1", "## RQ1", "## Curation", "## Stage 3", "### RL gain vs label noise",
                    "## Wall time per stage"):
        assert heading in report
    # Every model was evaluated in both orders and the results table has a row for each; the dose-response
    # reuses (b) for the pool's own noise rate and adds one run on the true labels.
    for model in ("sft", "a_egt", "b_full", "c_random", "d_descending", "noise_0"):
        metrics = json.loads((out / "eval" / model / "metrics.json").read_text())
        assert metrics["orders"] == "both" and metrics["n_pairs"] == 24
        assert 0.0 <= metrics["overall"]["both_order_accuracy"] <= 1.0
    assert not (out / "rl" / "noise_0.3").exists()
    assert report.count("| (") >= 4 and "| full pool, true labels |" in report
    # Claims are paired comparisons with an interval and a McNemar p-value.
    assert "| EGT (a) beats the full pool (b) | +" in report or "| EGT (a) beats the full pool (b) | -" in report
    assert "McNemar" in report and "(rl_gain_vs_noise.png)" in report
    assert (out / "rl_gain_vs_noise.png").exists()
    # The RL runs consumed their curated pairs in curriculum order.
    consumed = [json.loads(line) for line in (out / "rl" / "a_egt" / "consumed.jsonl").read_text().splitlines()]
    assert consumed and all(entry["ids"] for entry in consumed)
    from egt.core.records import read_rows

    selected = sorted(read_rows(out / "curate" / "curated_ascending" / "selected.parquet"), key=lambda r: r["order"])
    seen = []
    for entry in consumed:
        for pair_id in (i.removesuffix("::swap") for i in entry["ids"]):   # each pair, then its swapped copy
            if not seen or seen[-1] != pair_id:
                seen.append(pair_id)
    assert seen == [r["id"] for r in selected][:len(seen)]
    for figure in ("accuracy_by_quintile.png", "noise_by_quintile.png"):
        with Image.open(out / "analysis" / figure) as image:
            assert image.width >= 400
    # The pool viewer: one page, linked from the report.
    assert "(view.html)" in report and (out / "view.html").stat().st_size > 10_000
    # A rerun skips every finished stage (the worker count changes no result) and rewrites the report.
    second = subprocess.run(EGT + ["demo", "--tiny", "--output", str(out), "--rl_variants", "a_egt", "b_full",
                                   "c_random", "d_descending", "--dose-response", "0", "0.3"],
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("cached") == 8
    assert Path(out / "report.md").exists()
    # Other RL settings: refused, naming what changed, before any work; --overwrite redoes RL and eval only.
    changed = EGT + ["demo", "--tiny", "--output", str(out), "--rl_learning_rate", "0.0002", "--rl_variants", "a_egt"]
    third = subprocess.run(changed, capture_output=True, text=True, timeout=600)
    assert third.returncode == 1 and "stage rl was run with other settings" in third.stderr
    assert "rl_learning_rate: 0.0001 -> 0.0002" in third.stderr and "Traceback" not in third.stderr
    fourth = subprocess.run(changed + ["--overwrite"], capture_output=True, text=True, timeout=600)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert fourth.stdout.count("cached") == 6 and "[7/9] rl       done" in fourth.stdout
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["a_egt", "sft"]
    assert not (out / "rl" / "b_full").exists()


def test_report_rerun_command_reproduces_every_setting():
    import shlex

    from egt.core.config import load_config, parse_overrides
    from egt.demo.pipeline import Config, command_line

    cfg = Config(seeds=3, rl_steps=200, dose_response=[0.0, 0.1], rl_both_orders=False, rl_variants=["a_egt"],
                 noise="ambiguity:0.2")
    line = command_line(cfg)
    assert line.startswith("egt demo --output runs/demo --seed 0 ") and "--rl_steps 200" in line
    assert load_config(Config, None, parse_overrides(shlex.split(line)[2:])) == cfg
    assert command_line(Config()) == "egt demo --output runs/demo --seed 0"
