"""egt.judge.serve_client and ServedJudgeReward against a real egt serve (uvicorn in a thread): retries with
backoff on 503/429 and a dead port, 4xx errors naming the field, image encodings, verl's compute_score in its
per-sample, async and batched forms (called as verl calls them: keywords, the same keys on every call), the TRL
reward over HTTP by hand, and real GRPO steps of a tiny policy VLM rewarded over HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket

import pytest
from helpers import FakeOpenAIServer, LiveServer
from PIL import Image

from egt.core.config import load_config
from egt.judge.probability import RewardJudge
from egt.judge.serve import Config, Service, judge_options
from egt.judge.serve_client import (
    VERL_KEYS,
    ServeClient,
    ServeError,
    compute_score,
    compute_score_async,
    compute_score_batch,
    image_field,
    reference_fields,
)
from egt.judge.trl_reward import ServedJudgeReward


def png_bytes(colour=(10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    cfg = load_config(Config, None, {"model": str(tiny_model_dir), "max_new_tokens": 4, "device": "cpu"})
    with LiveServer(Service(cfg, RewardJudge.from_options(judge_options(cfg)))) as server:
        yield server


def test_retries_with_backoff_then_success_and_errors_that_name_the_field():
    answers = [(503, {"error": {"message": "busy"}}, {"Retry-After": "0"}), (429, {"error": {"message": "slow"}}),
               (200, {"results": [{"ok": 1}]})]
    with FakeOpenAIServer(lambda m, p, h, b: answers.pop(0)) as fake:
        client = ServeClient(fake.base_url.removesuffix("/v1"), backoff_s=0.01, retries=3)
        assert client.compare([{"question": "q", "response_1": "a", "response_2": "b"}]) == [{"ok": 1}]
        assert client.retried == 2 and len(fake.requests) == 3
        assert fake.requests[0][3]["pairs"][0]["images"] == []
    refusal = {"error": {"type": "invalid_request", "field": "pairs[0].response_2", "message": "Field required"}}
    with FakeOpenAIServer(lambda m, p, h, b: (422, refusal)) as fake:
        client = ServeClient(fake.base_url.removesuffix("/v1"), backoff_s=0.01)
        with pytest.raises(ServeError, match=r"HTTP 422: pairs\[0\].response_2: Field required") as err:
            client.compare([{"question": "q", "response_1": "a"}])
        assert err.value.field == "pairs[0].response_2" and len(fake.requests) == 1  # a 4xx is not retried
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ServeClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01)
    with pytest.raises(ServeError, match="failed after 2 retries"):
        client.info()
    assert client.retried == 2


def test_the_token_comes_from_the_environment(monkeypatch):
    with FakeOpenAIServer(lambda m, p, h, b: (200, {"seen": h.get("authorization")})) as fake:
        monkeypatch.setenv("MY_JUDGE_TOKEN", "t0k")
        client = ServeClient(fake.base_url.removesuffix("/v1"), token_env="MY_JUDGE_TOKEN", client_id="trainer-3")
        assert client.info() == {"seen": "Bearer t0k"} and fake.requests[0][2]["x-client-id"] == "trainer-3"


def test_image_encodings(tmp_path):
    data = png_bytes()
    uri = image_field(data)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == data
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert image_field(str(path)) == uri and image_field(str(path), send_paths=True) == str(path)
    assert image_field({"bytes": data, "path": None}) == uri and image_field({"path": str(path)}) == uri
    assert image_field(Image.open(io.BytesIO(data))) == uri
    assert image_field("https://x/y.png") == "https://x/y.png"
    with pytest.raises(TypeError):
        image_field(3)


def test_reference_fields():
    assert reference_fields("It is red.") == {"reference": "It is red.", "question": None, "images": None}
    assert reference_fields(json.dumps({"reference": "r", "question": "q", "images": ["a"]}))["images"] == ["a"]
    with pytest.raises(ValueError, match="reference"):
        reference_fields({"question": "q"})


def test_verl_compute_score_per_sample_async_and_batched(served):
    extra = {"question": "What colour is the square?", "image": image_field(png_bytes()), "index": 0,
             "num_turns": None, "rollout_reward_scores": {}}
    one = compute_score(data_source="egt", solution_str="It is green.", ground_truth="It is red.", extra_info=extra,
                        egt_url=served.url)
    assert tuple(one) == VERL_KEYS and 0 < one["score"] < 1 and one["egt_unreadable"] == 0.0
    again = asyncio.run(compute_score_async(data_source="egt", solution_str="It is green.",
                                            ground_truth="It is red.", extra_info=extra, egt_url=served.url))
    assert again == one  # deterministic
    batch = compute_score_batch(data_sources=["egt"] * 3, solution_strs=["It is green.", "It is red.", "blue"],
                                ground_truths=["It is red.", json.dumps({"reference": "It is red."}), "It is red."],
                                extra_infos=[extra] * 3, egt_url=served.url, chunk_size=2)
    assert [tuple(b) for b in batch] == [VERL_KEYS] * 3 and batch[0] == one
    with pytest.raises(ValueError, match="extra_info\\['question'\\]"):
        compute_score("egt", "x", "ref", {}, egt_url=served.url)


def test_served_judge_reward_by_hand(served):
    image = Image.new("RGB", (8, 8), (200, 20, 20))
    logged = {}
    reward = ServedJudgeReward(served.url, mode="reference")
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]] * 3
    out = reward(prompts=prompts, completions=["red", "blue", "red"], completion_ids=[[1]] * 3,
                 images=[[image]] * 3, reference=["blue", "blue", "blue"],
                 log_metric=lambda k, v: logged.__setitem__(k, v), trainer_state=None)
    assert len(out) == 3 and all(0 < r < 1 for r in out) and out[0] == out[2] and reward.__name__ == "served_judge"
    assert set(logged) == {"served_judge/orders_agree", "served_judge/abstain", "served_judge/answer_forced"}
    neutral = ServedJudgeReward(served.url, mode="reference", on_abstain=0.5)
    assert neutral._value(0.9, abstain=True) == 0.5 and neutral._value(0.9, abstain=False) == 0.9
    assert ServedJudgeReward(served.url, on_abstain="none")._value(0.9, abstain=True) is None
    rr = ServedJudgeReward(served.url, mode="round_robin", name="rr")
    out = rr(prompts=["p1"] * 3 + ["p2"], completions=["a", "b", "c", "d"], images=[[image]] * 4)
    assert sum(out[:3]) == pytest.approx(1.5) and out[3] == 0.5  # win probabilities of a group of 3; a group of 1
    with pytest.raises(ValueError, match="'reference' column"):
        reward(prompts=["p"], completions=["c"])


@pytest.mark.slow
def test_grpo_trains_a_tiny_policy_rewarded_over_http(coin_judge_dir, synth_pairs_path, tmp_path):
    """TRL's GRPOTrainer calls ServedJudgeReward, which asks egt serve (the coin judge) over loopback."""
    import torch
    from datasets import Dataset, List
    from datasets import Image as ImageFeature
    from trl import GRPOConfig, GRPOTrainer

    from egt.core.records import read_pairs
    from egt.tiny.build import TinyConfig, build_tiny

    cfg = load_config(Config, None, {"model": str(coin_judge_dir), "max_new_tokens": 24, "device": "cpu"})
    policy_dir = build_tiny(TinyConfig(output=tmp_path / "policy", seed=1, pretrain_steps=0))
    pairs = read_pairs(synth_pairs_path("test", 8, seed=5))
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": [{"type": "image"},
                                                                          {"type": "text", "text": p.question}]}],
                                  "question": p.question, "images": [{"path": p.images[0].path, "bytes": None}],
                                  "reference": p.chosen} for p in pairs]).cast_column("images", List(ImageFeature()))
    with LiveServer(Service(cfg, RewardJudge.from_options(judge_options(cfg)))) as server:
        reward = ServedJudgeReward(server.url, mode="reference")
        args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=3, num_generations=2,
                          per_device_train_batch_size=8, max_completion_length=8, learning_rate=1e-2,
                          logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0,
                          shuffle_dataset=False, beta=0.0, temperature=1.0)
        trainer = GRPOTrainer(model=str(policy_dir), reward_funcs=[reward], args=args, train_dataset=dataset)
        before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        judged = server.service.batcher.stats.jobs + server.service.batcher.stats.cache_hits
    logged = [h for h in trainer.state.log_history if "rewards/served_judge/mean" in h]
    assert len(logged) == 3 and judged >= 3 * 8 * 2
    assert any(h["rewards/served_judge/std"] > 0 for h in logged), "the served judge's rewards were constant"
    assert all(0.0 <= h["rewards/served_judge/mean"] <= 1.0 for h in logged)
    assert all("served_judge/orders_agree" in h for h in logged)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the policy's parameters did not change"
