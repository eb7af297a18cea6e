"""`egt rl use_vllm=true vllm_mode=colocate` on vLLM's CPU build (marked `vllm`: `make test-vllm`).

Two GRPO steps of the coin judge (conftest) with vLLM generating the rollouts inside the training process.
Checked from the trainer's logs (TRL computes them from vLLM's sampling log-probs and its own):
- the rollouts are well formed: the format reward is ~1 and few completions hit max_completion_length. With
  TRL's pre-expanded image placeholders (huggingface/trl#6294, egt.stages.rl.unexpanded_prompt_ids) vLLM saw
  corrupted prompts and wrote garbage (format 0, 94% truncated);
- the weights sync: at step 2, after one update at lr 1e-3, vLLM's log-probs of its own samples still equal the
  trainer's (mean |difference| < 0.01 nats/token, importance-sampling ratio ~1). Without a working sync
  (vLLM CPU's packed weights, egt.model.vllm_support.use_reload_for_colocate_sync) vLLM samples from the
  step-0 weights and the difference grows with every update;
- the trained weights changed and model/ is saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm


def test_rl_with_vllm_colocate_generates_well_formed_rollouts_from_synced_weights(coin_judge_dir, synth_pairs_path,
                                                                                   tmp_path):
    from egt.core.records import read_pairs, write_pairs

    pairs = read_pairs(synth_pairs_path("pool", 12, seed=3))
    for i, pair in enumerate(pairs):
        pair.extra["order"] = i
    train = write_pairs(pairs, tmp_path / "selected.parquet")
    out = tmp_path / "rl"
    command = [sys.executable, "-m", "egt.cli", "rl", f"model={coin_judge_dir}", f"train={train}", f"output={out}",
               "max_steps=2", "num_generations=4", "per_device_train_batch_size=8", "max_completion_length=24",
               "learning_rate=1e-3", "freeze_vision=false", "use_vllm=true", "vllm_mode=colocate", "save_steps=100",
               "logging_steps=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")})
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    summary = json.loads((out / "train_summary.json").read_text())
    steps = [h for h in summary["log_history"] if "sampling/sampling_logp_difference/mean" in h]
    assert summary["global_step"] == 2 and len(steps) == 2
    for h in steps:
        assert h["rewards/format_reward/mean"] >= 0.9, h
        assert h["completions/clipped_ratio"] <= 0.25, h
    step2 = steps[1]
    assert step2["sampling/sampling_logp_difference/mean"] < 0.01, step2
    assert 0.95 <= step2["sampling/importance_sampling_ratio/mean"] <= 1.05, step2
    assert (out / "model" / "config.json").exists()
