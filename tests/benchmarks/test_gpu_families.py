"""benchmarks/gpu_families.py: one family per call, a plan whose disk arithmetic fits a 64 GiB one-GPU machine,
a refusal with the numbers when the scratch disk is too small, and its --dry-run on CPU for each family."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import gpu_families as gf  # noqa: E402

GIB = 2 ** 30


@pytest.mark.parametrize("arch, billions", [("qwen2_5_vl", 8.29), ("qwen3_vl", 8.77)])
def test_plan_of_each_family_fits_one_64_gib_machine(arch, billions):
    plan = gf.disk_plan(arch, dry_run=False)
    assert plan["parameters"] / 1e9 == pytest.approx(billions, abs=0.01)   # the published sizes
    model = plan["model_bytes"]
    assert model == plan["parameters"] * 2   # bf16
    steps = {s["stage"]: s for s in plan["steps"]}
    # at most two models at once: sft writes its merged model beside base, rl beside sft's
    assert steps["sft"]["during_bytes"] == 2 * model + plan["lora_parameters"] * 4
    assert steps["sft"]["after_bytes"] == model + plan["lora_parameters"] * 4        # base/ removed
    assert steps["rl"]["during_bytes"] == plan["peak_bytes"] == 2 * model + 2 * plan["lora_parameters"] * 4
    assert steps["rl"]["after_bytes"] == 0                                         # everything removed
    assert plan["need_bytes"] == int(plan["peak_bytes"] * 1.1) + 2 * GIB
    assert plan["need_bytes"] < 40 * GIB   # one family on a 64 GiB disk, with room for the OS and the venv
    assert sum(s.budget_s for s in gf.STAGES) < gf.CALL_BUDGET_S <= 8 * 60


def test_too_small_a_disk_is_refused_with_the_numbers(tmp_path):
    plan = gf.disk_plan("qwen2_5_vl", dry_run=False)
    problem = gf.check_disk(plan, tmp_path, free_bytes=30 * GIB)
    assert "30.0 GiB free" in problem and "needs 36.3 GiB" in problem and "peak of 31.2 GiB" in problem
    assert gf.check_disk(plan, tmp_path, free_bytes=plan["need_bytes"]) is None


def test_one_family_per_call():
    with pytest.raises(SystemExit):
        gf.main([])            # --family is required
    with pytest.raises(SystemExit):
        gf.main(["--family", "gemma3", "--plan"])


@pytest.mark.heavy
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_dry_run_of_each_family_runs_every_stage_and_cleans_up(arch, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_families.py"), "--family", arch, "--dry-run",
                             "--scratch", str(tmp_path)], capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("build", "sft", "score", "rl"):
        assert f"| {stage} |" in result.stdout and f"{arch}: {stage} done" in result.stdout
    assert "| rl | 300 |" in result.stdout and "| 0.00 | rl, sft |" in result.stdout   # the plan: nothing left
    assert f"--family {arch}" in result.stdout and "--dry-run" in result.stdout
    assert list(tmp_path.iterdir()) == []   # every folder removed
