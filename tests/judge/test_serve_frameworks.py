"""verl's and OpenRLHF's own reward code calling a real `egt serve` process.

This file imports no egt module: it runs inside a framework's virtual environment, which cannot hold egt
(verl pins transformers<5.11, OpenRLHF ==5.15 and flash-attn), and starts the server with egt's own Python
(`EGT_PYTHON`, default: this interpreter). Each test runs where its framework imports and is skipped
otherwise; `make test-frameworks` builds both environments and runs them:

- verl 0.9.1 (full install): the reward loop's `RewardLoopWorker` (verl's per-sample path: NaiveRewardManager
  loads `src/egt/judge/serve_client.py` by path as `reward.custom_reward_function.path` and calls
  compute_score / compute_score_async with verl's keywords), and the legacy `BatchRewardManager` with
  compute_score_batch.
- OpenRLHF 0.11.2 (`--no-deps` + transformers, aiohttp, pylatexenc: its full install needs CUDA for flash-attn):
  `SingleTurnAgentExecutor.execute`, which posts to `--reward.remote_url` (/get_reward). The vLLM engine is a
  stand-in that returns a fixed response (no GPU); the reward path, from the decoded query to the reward, is
  OpenRLHF's own.

The served judge is the shipped tiny base (src/egt/assets/tiny_judge_base): it writes no verdict, so every
answer is forced, which is enough to check the wiring and that equal inputs get equal rewards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT_FILE = REPO / "src" / "egt" / "judge" / "serve_client.py"
EGT_PYTHON = os.environ.get("EGT_PYTHON", sys.executable)
VERL_KEYS = ("score", "egt_prob", "egt_abstain", "egt_orders_agree", "egt_answer_forced", "egt_unreadable")
# An 8 x 8 red PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8ISLCgA0wYRUdtBIAwVwBAIKmWLoAAAAASUVORK5CYII=")
IMAGE = "data:image/png;base64," + base64.b64encode(PNG).decode()
QUESTION = "What colour is the square?"


def _have(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_verl = pytest.mark.skipif(not _have("verl"), reason="verl is not installed here (make test-frameworks)")
needs_openrlhf = pytest.mark.skipif(not _have("openrlhf"), reason="OpenRLHF is not installed here "
                                                                  "(make test-frameworks)")


@pytest.fixture(scope="module")
def egt_server(tmp_path_factory):
    """`egt serve` on the tiny base, as a process of egt's Python; yields its URL."""
    if not (_have("verl") or _have("openrlhf")):
        pytest.skip("no framework installed here")
    out = tmp_path_factory.mktemp("serve")
    ready = out / "url"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    log = open(out / "server.log", "w")
    proc = subprocess.Popen([EGT_PYTHON, "-m", "egt.cli", "serve", str(REPO / "src/egt/assets/tiny_judge_base"),
                             "--port", "0", "--max_new_tokens", "4", "--device", "cpu", "--ready_file", str(ready),
                             "--access_log", "false"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"egt serve did not start: {(out / 'server.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield ready.read_text().strip()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    log.close()


def score_directly(url: str, response: str, reference: str) -> float:
    body = json.dumps({"items": [{"image": IMAGE, "question": QUESTION, "response": response,
                                  "reference": reference}]}).encode()
    request = urllib.request.Request(url + "/v1/score", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())["rewards"][0]


# ---------------------------------------------------------------- verl

def _verl_batch(tmp_path, responses, references):
    """A verl DataProto of prompts and responses, as the rollout hands it to the reward manager."""
    import numpy as np
    import torch
    from tensordict import TensorDict
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from verl import DataProto

    words = ["[PAD]", "[UNK]", "<|im_end|>", "What"] + sorted({w for r in responses for w in r.split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="<|im_end|>")
    hf.save_pretrained(tmp_path / "tokenizer")
    prompt_len, response_len = 8, 8
    prompts, outs, masks = [], [], []
    for response in responses:
        p_ids = hf("What")["input_ids"]
        r_ids = hf(response)["input_ids"] + [hf.eos_token_id]
        prompts.append([0] * (prompt_len - len(p_ids)) + p_ids)
        outs.append(r_ids + [0] * (response_len - len(r_ids)))
        masks.append([0] * (prompt_len - len(p_ids)) + [1] * len(p_ids) + [1] * len(r_ids)
                     + [0] * (response_len - len(r_ids)))
    prompts, outs, masks = (torch.tensor(x) for x in (prompts, outs, masks))
    batch = TensorDict({"prompts": prompts, "responses": outs, "attention_mask": masks,
                        "input_ids": torch.cat([prompts, outs], 1)}, batch_size=len(responses))
    n = len(responses)
    non_tensor = {"data_source": np.array(["egt_vlm"] * n, dtype=object),
                  "reward_model": np.array([{"style": "model", "ground_truth": g} for g in references], dtype=object),
                  "extra_info": np.array([{"image": IMAGE, "question": QUESTION, "index": i} for i in range(n)],
                                         dtype=object)}
    return DataProto(batch=batch, non_tensor_batch=non_tensor), hf, tmp_path / "tokenizer"


@needs_verl
@pytest.mark.parametrize("function", ["compute_score", "compute_score_async"])
def test_verl_reward_loop_scores_each_rollout_through_egt_serve(egt_server, tmp_path, function):
    from omegaconf import OmegaConf

    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    responses = ["It is red.", "It is blue.", "It is red."]
    data, _, tokenizer_dir = _verl_batch(tmp_path, responses, ["It is red.", "It is red.", "It is red."])
    cfg = OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": str(tokenizer_dir), "tokenizer_path": None}},
        "reward": {"num_workers": 1,
                   "custom_reward_function": {"path": str(CLIENT_FILE), "name": function,
                                              "reward_kwargs": {"egt_url": egt_server}},
                   "reward_manager": {"source": "register", "name": "naive", "module": {"path": None, "name": "x"}},
                   "reward_model": {"enable": False}, "sandbox_fusion": {"url": None}}})
    worker = RewardLoopWorker(cfg, reward_router_address=None)
    assert type(worker.reward_manager).__name__ == "NaiveRewardManager"
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data)) if not worker.loop.is_running() \
        else asyncio.run(worker.compute_score_batch(data))
    scores = [o["reward_score"] for o in outputs]
    assert all(0 < s < 1 for s in scores)
    assert all(tuple(o["reward_extra_info"]) == VERL_KEYS for o in outputs)
    assert scores[0] == scores[2]                          # the same response: the same reward
    assert scores[0] == score_directly(egt_server, "It is red.", "It is red.")  # what /v1/score says


@needs_verl
def test_verl_legacy_batch_manager_places_the_rewards_on_the_last_token(egt_server, tmp_path):
    import importlib.util
    from functools import partial

    from verl.trainer.ppo.reward import _call_with_kwargs
    from verl.workers.reward_manager.batch import BatchRewardManager

    responses = ["It is red.", "It is blue."]
    data, hf, _ = _verl_batch(tmp_path, responses, ["It is red.", "It is red."])
    spec = importlib.util.spec_from_file_location("egt_reward", CLIENT_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manager = BatchRewardManager(hf, num_examine=0, compute_score=partial(
        _call_with_kwargs, module.compute_score_batch, {"egt_url": egt_server}))
    result = manager(data, return_dict=True)
    tensor = result["reward_tensor"]
    for row, response in enumerate(responses):
        last = len(hf(response)["input_ids"])          # the eos after the response
        assert tensor[row, last].item() == pytest.approx(score_directly(egt_server, response, "It is red."))
        assert tensor[row].abs().sum().item() == pytest.approx(abs(tensor[row, last].item()))
    assert set(VERL_KEYS) - {"score"} <= set(result["reward_extra_info"])


# ---------------------------------------------------------------- OpenRLHF

class _CharTokenizer:
    """One character per token: decode(encode(text)) == text, as the executor needs to rebuild the query."""

    def __call__(self, text, add_special_tokens=False, return_tensors="pt"):
        import torch

        return {"input_ids": torch.tensor([[ord(c) for c in text]])}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


class _FixedEngine:
    """Stands in for OpenRLHF's vLLM engine: returns `response` for any prompt."""

    def __init__(self, response: str):
        self.response = response

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        from types import SimpleNamespace

        ids = [ord(c) for c in self.response]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text=self.response, finish_reason="stop",
                                                        logprobs=None)])


@needs_openrlhf
def test_openrlhf_single_turn_executor_gets_rewards_from_egt_serve(egt_server):
    from types import SimpleNamespace

    from openrlhf.utils.agent import SingleTurnAgentExecutor

    prompt = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
              f"<|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    label = json.dumps({"reference": "It is red.", "images": [IMAGE]})   # the --data.label_key column
    rewards = {}

    async def run():
        for response in ("It is red.", "It is blue."):
            executor = SingleTurnAgentExecutor(remote_rm_url=egt_server + "/get_reward")
            out = await executor.execute(prompt, label, SimpleNamespace(max_tokens=64, logprobs=None), 4096,
                                         _CharTokenizer(), _FixedEngine(response + "<|im_end|>"))
            rewards[response] = out

    asyncio.run(run())
    for response, out in rewards.items():
        assert out["reward"] is not None, "OpenRLHF got no reward (it logs the error and keeps None)"
        assert len(out["reward"]) == 1 and out["scores"] == out["reward"]
        # the question came from the prompt's user turn, the response from the query: /v1/score agrees
        assert out["reward"][0] == score_directly(egt_server, response, "It is red.")
        assert set(out["extra_logs"]) >= {"egt_prob", "egt_abstain", "egt_orders_agree"}
