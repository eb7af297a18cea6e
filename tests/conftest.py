"""Shared fixtures: the tiny judge and tiny synthetic data, built locally (no downloads).

Fixtures (all session-scoped, built once per test run):
- `tiny_model_dir` -> Path: a saved tiny Qwen2-VL judge (egt.tiny.build.build_tiny, seed 0, no perception
  pre-training: random weights);
  load it with `egt.model.loading.load_judge(tiny_model_dir)`. Treat it as read-only (copy it to train it).
- `tiny_family_dir(arch)` -> Path: a factory for the tiny judge of any model family (egt.tiny.families.build,
  seed 0, random weights), built once per arch; `tiny_family_dir("qwen2_vl")` is `tiny_model_dir`. Read-only.
- `synth_pairs_path(split="pool", n=24, seed=0, noise="none", **kw)` -> Path: a factory that writes a
  synthetic pairs Parquet file (PNGs in `<stem>_images/` beside it) with egt.data.synth.run and caches it
  per argument set; extra keywords go to egt.data.synth.Config (question_kinds, hard_fraction).
- `synth_pairs` -> Path: 24 pool pairs with ambiguity-driven label noise (`ambiguity:0.25`) and images.
- `synth_pairs_list` -> list[PreferencePair]: the pairs of `synth_pairs`, read back with schema.read_pairs.
- `coin_judge_dir` -> Path: the tiny judge taught the judge format with a coin-flip verdict
  (`<think>Response k is better.</think><answer>k</answer>`, k random), so its sampled judgements are well
  formed and split between the two responses (a judge for tests that need verdicts: GRPO in test_rl, the
  reward of test_judge_reward).
- `served_vllm_judge` -> ServedJudge: `coin_judge_dir` served by vLLM's OpenAI server on 127.0.0.1 (tests marked
  `vllm`; started once per session, stopped at its end): `.base_url`, `.model_dir`, `.vocab_size`.

Tests marked `vllm` need vLLM (its CPU build: `make vllm-env`, run by `make test-vllm`): where it cannot be
imported they are skipped with that reason, and under CI=1 they fail instead, so CI never passes without them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs `-n 2`) each worker is one of two processes sharing the cores:
# one torch thread each (set before torch is imported; subprocesses inherit it), so they do not oversubscribe.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("vllm") is None:
        return
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        reason = (f"vllm is not importable by {sys.executable}: build vLLM's CPU build with `make vllm-env` and run "
                  "these tests with `make test-vllm`")
        if os.environ.get("CI"):
            pytest.fail(f"CI=1: {reason}", pytrace=False)
        pytest.skip(reason)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB per engine; else sized from the machine's memory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from egt.tiny.build import TinyConfig, build_tiny

    return build_tiny(TinyConfig(output=tmp_path_factory.mktemp("tiny_judge") / "model", seed=0, pretrain_steps=0))


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory, tiny_model_dir):
    from egt.tiny.families import TinyConfig, build

    built = {"qwen2_vl": tiny_model_dir}

    def make(arch: str) -> Path:
        if arch not in built:
            out = tmp_path_factory.mktemp(f"tiny_{arch}") / "model"
            built[arch] = build(TinyConfig(output=out, arch=arch, seed=0, pretrain_steps=0))
        return built[arch]

    return make


@pytest.fixture(scope="session")
def synth_pairs_path(tmp_path_factory):
    from egt.data import synth

    root = tmp_path_factory.mktemp("synth")
    cache: dict = {}

    def make(split: str = "pool", n: int = 24, seed: int = 0, noise: str = "none", **kwargs) -> Path:
        key = (split, n, seed, noise, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in cache:
            out = root / f"set{len(cache)}" / f"{split}.parquet"
            cache[key] = synth.run(synth.Config(split=split, n=n, seed=seed, noise=noise, output=out, **kwargs))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def synth_pairs(synth_pairs_path) -> Path:
    return synth_pairs_path("pool", 24, 0, "ambiguity:0.25")


@pytest.fixture(scope="session")
def synth_pairs_list(synth_pairs):
    from egt.core.records import read_pairs

    return read_pairs(synth_pairs)


@pytest.fixture(scope="session")
def coin_judge_dir(tiny_model_dir, synth_pairs_path, tmp_path_factory) -> Path:
    import random

    import torch

    from egt.core.prompts import format_judgement
    from egt.core.records import read_pairs
    from egt.model.encoding import judge_batch_inputs
    from egt.model.loading import load_judge

    pairs = read_pairs(synth_pairs_path("train", 48, seed=1))
    model, processor = load_judge(tiny_model_dir)
    model.train()
    torch.manual_seed(0)
    coin = random.Random(0)
    # 80 steps at 5e-3: every one of 64 sampled judgements well formed, verdicts 30/34 (120 at 3e-3: 62/64, 28/34)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for step in range(80):
        batch_pairs = [pairs[(step * 8 + i) % len(pairs)] for i in range(8)]
        completions = [format_judgement(f"Response {k} is better.", k) for k in (coin.choice((1, 2)) for _ in range(8))]
        batch = judge_batch_inputs(processor, batch_pairs, completions=completions, append_eos=True,
                                   padding_side="right")
        mask = batch.pop("completion_mask")
        model(**batch, labels=batch["input_ids"].masked_fill(mask == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("coin_judge") / "model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


class ServedJudge:
    """A judge folder served by vLLM's OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`)."""

    def __init__(self, model_dir: Path, port: int, log_path: Path):
        import json

        self.model_dir, self.port, self.log_path = model_dir, port, log_path
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.name = "judge"
        self.vocab_size = json.loads((model_dir / "config.json").read_text()).get("vocab_size") or \
            json.loads((model_dir / "config.json").read_text())["text_config"]["vocab_size"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def start_vllm_server(model_dir: Path, log_path: Path, timeout_s: float = 600.0, extra_args=()):
    """(process, ServedJudge) once /v1/models answers; pytest.fail with the server's log if it does not."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = ServedJudge(model_dir, port, log_path)
    # `python -m vllm.entrypoints.openai.api_server`: the `vllm` console command fails on the CPU build (its
    # distribution is vllm-cpu, so `vllm --version` finds no metadata). --max-logprobs 20: egt asks for the top 20.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served.name, "--host", "127.0.0.1", "--port", str(port),
               "--max-logprobs", "20", "--seed", "0", "--dtype", "float32", *extra_args]   # float32 as local judges
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    log = open(log_path, "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            pytest.fail(f"vLLM server exited with {process.returncode}:\n{served.log_tail()}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{served.base_url}/models", timeout=5) as reply:
                if reply.status == 200:
                    return process, served
        except OSError:
            time.sleep(2)
    process.kill()
    log.close()
    pytest.fail(f"vLLM server did not answer within {timeout_s:.0f} s:\n{served.log_tail()}", pytrace=False)


def stop_process(process, grace_s: float = 30.0) -> None:
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def served_vllm_judge(coin_judge_dir, tmp_path_factory):
    process, served = start_vllm_server(coin_judge_dir, tmp_path_factory.mktemp("vllm_server") / "server.log")
    yield served
    stop_process(process)
