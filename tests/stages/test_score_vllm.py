"""`egt score backend=vllm` on vLLM's CPU build (marked `vllm`: `make test-vllm` runs them with .venv-vllm).

The tiny coin judge (conftest.coin_judge_dir) scores 24 pairs x K = 8 in two shards of 12 pairs. One shard
is 96 seeded requests of ~55 prompt tokens, over the 4,096-token budget of one engine step, so with vLLM's
default chunked prefill the CPU engine dies ("CPU Generator does not use offset", egt.model.vllm_support);
the in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) queues every request before the first step, which
makes that deterministic. What is checked:
- exact mode: vLLM's completions get the same token entropies as the HF backend's teacher-forced pass over
  the same completions (`mode=teacher_forced`), within 1e-4 nats, token ids identical;
- top-k mode: the same seeds give the same completions, and lower <= exact <= upper at every token;
- two ranks of one launched world (torchrun, gloo on CPU) each start an engine, score their own shard,
  and rank 0's merge equals the one-process run.
- the cause: with chunked prefill turned back on, the same shard dies with the offset error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from egt.core.records import read_rows

pytestmark = pytest.mark.vllm

PAIRS, SHARD, SAMPLES, NEW_TOKENS = 24, 12, 8, 24
COMMON = [f"samples={SAMPLES}", f"shard_size={SHARD}", f"max_new_tokens={NEW_TOKENS}", "batch_size=32",
          "dump_tokens=true", "progress=false", "dtype=float32", "seed=0"]


def egt(args: list[str], env: dict | None = None, timeout_s: float = 900, launcher: list[str] | None = None):
    """Run `python -m egt.cli ...` (vLLM needs a real __main__: its CPU platform spawns its workers)."""
    command = [*(launcher or [sys.executable]), "-m", "egt.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def tokens_by_key(folder: Path) -> dict[tuple[str, int], dict]:
    return {(row["id"], int(row["sample"])): row for row in read_rows(folder / "tokens.parquet")}


@pytest.fixture(scope="module")
def pool(synth_pairs_path) -> Path:
    return synth_pairs_path("pool", PAIRS, seed=5)


@pytest.fixture(scope="module")
def vllm_exact(coin_judge_dir, pool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("score_vllm") / "exact"
    egt(["score", f"model={coin_judge_dir}", f"pairs={pool}", f"output={out}", "backend=vllm", *COMMON],
        env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    return out


def test_exact_entropies_equal_hf_teacher_forced(vllm_exact, coin_judge_dir, pool, tmp_path):
    summary = json.loads((vllm_exact / "summary.json").read_text())
    assert summary["judgements"] == PAIRS * SAMPLES and summary["format_ok_rate"] > 0.9
    hf = tmp_path / "hf_teacher_forced"
    egt(["score", f"model={coin_judge_dir}", f"pairs={vllm_exact / 'scores.parquet'}", f"image_root={pool.parent}",
         f"output={hf}", "mode=teacher_forced", "response_column=completions", *COMMON])
    vllm_tokens, hf_tokens = tokens_by_key(vllm_exact), tokens_by_key(hf)
    assert set(vllm_tokens) == set(hf_tokens) and len(vllm_tokens) == PAIRS * SAMPLES
    worst = 0.0
    for key, row in vllm_tokens.items():
        assert list(row["token_ids"]) == list(hf_tokens[key]["token_ids"]), key
        diff = np.abs(np.array(row["token_entropies_nats"]) - np.array(hf_tokens[key]["token_entropies_nats"]))
        worst = max(worst, float(diff.max(initial=0.0)))
    assert worst < 1e-4
    vllm_rows, hf_rows = read_rows(vllm_exact / "scores.parquet"), read_rows(hf / "scores.parquet")
    for a, b in zip(vllm_rows, hf_rows):
        assert a["id"] == b["id"] and a["verdicts"] == b["verdicts"]
        assert a["max_token_entropy_nats"] == pytest.approx(b["max_token_entropy_nats"], abs=1e-4)


def test_topk_bounds_hold_at_every_token(vllm_exact, coin_judge_dir, pool, tmp_path):
    out = tmp_path / "topk"
    egt(["score", f"model={coin_judge_dir}", f"pairs={pool}", f"output={out}", "backend=vllm",
         "vllm_entropy=topk", "vllm_logprobs=20", *COMMON])
    exact, bounded = tokens_by_key(vllm_exact), tokens_by_key(out)
    assert set(exact) == set(bounded)
    checked = 0
    for key, row in bounded.items():
        assert list(row["token_ids"]) == list(exact[key]["token_ids"]), key   # the same seeds, the same samples
        lower, upper = np.array(row["token_entropies_lower_nats"]), np.array(row["token_entropies_nats"])
        value = np.array(exact[key]["token_entropies_nats"])
        assert np.all(lower <= value + 1e-4) and np.all(value <= upper + 1e-4), key
        assert np.all(lower <= upper)
        checked += len(value)
    assert checked > PAIRS * SAMPLES * 5
    rows = read_rows(out / "scores.parquet")
    assert all(r["max_token_entropy_lower_nats"] <= r["max_token_entropy_nats"] for r in rows)


def test_two_ranks_each_start_an_engine_and_split_the_shards(vllm_exact, coin_judge_dir, pool, tmp_path):
    out = tmp_path / "two_ranks"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    egt(["score", f"model={coin_judge_dir}", f"pairs={pool}", f"output={out}", "backend=vllm", *COMMON],
        launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    markers = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("*.done"))]
    assert [m["rank"] for m in markers] == [0, 1]   # shard i on rank i % 2, each with its own engine
    merged, single = read_rows(out / "scores.parquet"), read_rows(vllm_exact / "scores.parquet")
    assert [r["id"] for r in merged] == [r["id"] for r in single]
    assert [r["completions"] for r in merged] == [r["completions"] for r in single]


def test_chunked_prefill_on_cpu_is_what_kills_seeded_requests(coin_judge_dir, pool, tmp_path):
    """The cause egt avoids (egt.model.vllm_support): the same shard with vLLM's chunked prefill turned back on
    dies with "CPU Generator does not use offset". Should vLLM's CPU build ever stop failing here, egt's
    default (off) can be revisited."""
    out = tmp_path / "chunked"
    command = [sys.executable, "-m", "egt.cli", "score", f"model={coin_judge_dir}", f"pairs={pool}", f"output={out}",
               "backend=vllm", "vllm_chunked_prefill=true", *COMMON]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert result.returncode != 0 and "CPU Generator does not use offset" in result.stderr, result.stderr[-3000:]
