"""JudgeReward: a trained judge as a policy's TRL reward; by hand against a served judge, then real GRPO
steps of a tiny policy VLM on CPU with the tiny judge as the reward."""

from __future__ import annotations

import pytest
from helpers import FakeOpenAIServer, FakeServedJudge
from PIL import Image

from egt.judge.api import Judge
from egt.judge.trl_reward import JudgeReward, group_bounds, prompt_question


def conversation(question):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def test_helpers():
    assert prompt_question("plain") == "plain"
    assert prompt_question(conversation("What colour?")) == "What colour?"
    assert group_bounds(["a", "a", "b", "b", "b", "a"]) == [(0, 2), (2, 5), (5, 6)]
    assert group_bounds(list("abcde"), group_size=2) == [(0, 2), (2, 4), (4, 5)]


def test_reference_and_round_robin_rewards_by_hand(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 20, 200))
    logged = {}
    with FakeOpenAIServer(FakeServedJudge()) as server:
        judge = Judge.from_pretrained(server.base_url, served_model="judge-x", vocab_size=10, top_logprobs=2)
        # the served judge prefers a response starting with "good"; two "bad" ones get no verdict
        reward = JudgeReward(judge, mode="reference")
        out = reward(prompts=[conversation("q1")] * 3, completions=["good a", "bad b", "bad c"],
                     completion_ids=[[1]] * 3, images=[[image]] * 3, reference=["bad ref", "good ref", "bad ref"],
                     log_metric=lambda k, v: logged.__setitem__(k, v), trainer_state=None)
        assert out == [1.0, 0.0, 0.0] and reward.__name__ == "judge_reward"
        assert logged["judge_reward/orders_agree"] == pytest.approx(2 / 3)
        assert logged["judge_reward/no_verdict"] == pytest.approx(1 / 3)
        assert logged["judge_reward/max_entropy"] > 0
        # conversational completions, and the question from the `question` column
        out = reward(prompts=["ignored"], completions=[[{"role": "assistant", "content": "good x"}]],
                     question=["q"], image=[image], reference=["bad y"])
        assert out == [1.0]
        asked = [r[3]["messages"][0]["content"][-1]["text"] for r in server.requests if r[0] == "POST"]
        assert "Question: q\n" in asked[-1]
        # round robin inside each group of a prompt: good beats both bad ones, bad vs bad has no verdict
        rr = JudgeReward(judge, mode="round_robin", name="rr")
        prompts = [conversation("q1")] * 3 + [conversation("q2")] * 2
        out = rr(prompts=prompts, completions=["bad 1", "good 2", "bad 3", "good 4", "bad 5"], images=[[image]] * 5)
        assert out == [0.0, 1.0, 0.0, 1.0, 0.0]
        with pytest.raises(ValueError, match="'reference' column"):
            reward(prompts=["p"], completions=["good"], images=[[image]])


@pytest.mark.slow
def test_grpo_trains_a_tiny_policy_with_the_judge_as_reward(coin_judge_dir, synth_pairs_path, tmp_path):
    import torch
    from datasets import Dataset, List
    from datasets import Image as ImageFeature
    from trl import GRPOConfig, GRPOTrainer

    from egt.core.records import read_pairs
    from egt.model.loading import load_judge
    from egt.tiny.build import TinyConfig, build_tiny

    policy_dir = build_tiny(TinyConfig(output=tmp_path / "policy", seed=1, pretrain_steps=0))
    pairs = read_pairs(synth_pairs_path("test", 8, seed=5))
    dataset = Dataset.from_list([{"prompt": conversation(p.question), "question": p.question,
                                  "images": [{"path": p.images[0].path, "bytes": None}], "reference": p.chosen}
                                 for p in pairs]).cast_column("images", List(ImageFeature()))
    reward = JudgeReward(coin_judge_dir, mode="reference", samples=2, max_new_tokens=24, device="cpu")
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=3, num_generations=2,
                      per_device_train_batch_size=8, max_completion_length=8, learning_rate=1e-2, logging_steps=1,
                      report_to="none", use_cpu=True, save_strategy="no", seed=0, shuffle_dataset=False,
                      beta=0.0, temperature=1.0)
    trainer = GRPOTrainer(model=str(policy_dir), reward_funcs=[reward], args=args, train_dataset=dataset)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/judge_reward/mean" in h]
    assert len(logged) == 3
    assert any(h["rewards/judge_reward/std"] > 0 for h in logged), "the judge's rewards were constant"
    assert all(0.0 <= h["rewards/judge_reward/mean"] <= 1.0 for h in logged)
    assert all("judge_reward/no_verdict" in h for h in logged)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the policy's parameters did not change"
    # the judge itself is only read
    judge_model, _ = load_judge(coin_judge_dir)
    assert all(torch.equal(v, reward.judge.backend.model.state_dict()[k]) for k, v in judge_model.state_dict().items())
