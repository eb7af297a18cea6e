"""egt.judge.probability: answer probabilities read at the verdict token, averaged over both orders; the forced
answer of a judgement without a verdict; the endpoint's top-k reading; calibration files; batch invariance."""

from __future__ import annotations

import math

import pytest

from egt.core.calibration import sigmoid
from egt.core.errors import ConfigError
from egt.core.prompts import Verdict
from egt.judge.api import make_pair
from egt.judge.probability import (
    LOGIT_CAP,
    Calibration,
    ProbJudgement,
    RewardJudge,
    pair_reward,
    topk_two_way_logit,
    two_way_logit,
    verdict_token_ids,
)


def judgement(logit, verdict=None, forced=False):
    return ProbJudgement("<think>x</think>", Verdict(verdict, "x", verdict is not None, None), 3,
                         answer_logit=logit, answer_forced=forced)


def test_two_way_log_odds_by_hand():
    # "1" and " 1" (logits 2 and 0) against "2" (logit 1): log(e^2 + e^0) - 1
    assert two_way_logit([2.0, 0.0, 1.0], n_first=2) == pytest.approx(math.log(math.e ** 2 + 1) - 1)
    assert two_way_logit([-math.inf, -math.inf], 1) == 0.0
    assert two_way_logit([0.0, -math.inf], 1) == LOGIT_CAP
    # top-k: 0.6 on "1", 0.3 on "2" -> log 2; an answer not listed is bounded by the smallest listed / the rest
    assert topk_two_way_logit([("1", math.log(0.6)), (" 2", math.log(0.3))]) == pytest.approx(math.log(2))
    assert topk_two_way_logit([("2", math.log(0.9)), ("x", math.log(0.02))]) == pytest.approx(math.log(0.02 / 0.9))
    assert topk_two_way_logit([("x", math.log(0.9))]) is None
    assert topk_two_way_logit([("1", 0.0)]) == LOGIT_CAP  # p = 1: nothing left for "2"


def test_pair_reward_averages_the_orders_and_abstains():
    # given order: P(position 1) = sigmoid(2); swapped: P(position 1) = sigmoid(1), i.e. P(response 1) = sigmoid(-1)
    r = pair_reward(["given", "swapped"], [[judgement(2.0, 1)], [judgement(1.0, 1)]], "exact")
    assert r.prob_by_order == {"given": pytest.approx(sigmoid(2.0)), "swapped": pytest.approx(sigmoid(-1.0))}
    assert r.prob_1 == pytest.approx((sigmoid(2.0) + sigmoid(-1.0)) / 2) and r.verdict == 1
    assert r.orders_agree is False and r.abstain is False   # position 1 both times: the orders disagree
    assert r.uncertainty == pytest.approx(1 - r.prob_1)
    agree = pair_reward(["given", "swapped"], [[judgement(2.0, 1)], [judgement(-1.0, 2)]], "exact")
    assert agree.orders_agree is True and agree.prob_1 == pytest.approx((sigmoid(2.0) + sigmoid(1.0)) / 2)
    # temperature and a threshold
    cal = Calibration(temperature=2.0, abstain_threshold=0.2)
    scaled = pair_reward(["given", "swapped"], [[judgement(2.0, 1)], [judgement(-1.0, 2)]], "exact", cal)
    assert scaled.prob_1 == pytest.approx((sigmoid(1.0) + sigmoid(0.5)) / 2)
    assert scaled.abstain == (1 - scaled.prob_1 > 0.2)
    # one order unreadable: the other's probability, flagged as abstained (not debiased)
    half = pair_reward(["given", "swapped"], [[judgement(2.0, 1)], [judgement(None)]], "exact")
    assert half.prob_1 == pytest.approx(sigmoid(2.0)) and half.abstain and half.orders_agree is None
    none = pair_reward(["given"], [[judgement(None)]], None)
    assert none.prob_1 is None and none.verdict is None and none.abstain
    assert none.to_dict()["prob"] is None
    forced = pair_reward(["given"], [[judgement(0.0, forced=True)]], "exact")
    assert forced.prob_1 == 0.5 and forced.verdict is None and forced.answer_forced == 1


def test_calibration_file_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"temperature": -1}')
    with pytest.raises(ConfigError, match="calibration.json.*'temperature'"):
        Calibration.load(path)
    path.write_text('{"temperature": 1.5, "threshold": 0.1}')
    with pytest.raises(ConfigError, match="'threshold'"):
        Calibration.load(path)
    path.write_text('{"temperature": 1.5, "abstain_threshold": 0.1, "abstain_metric": "max"}')
    assert Calibration.load(path).abstain_metric == "max"


def test_verdict_tokens_of_the_tiny_tokenizer(tiny_model_dir):
    from egt.model.loading import load_judge

    _, processor = load_judge(tiny_model_dir)
    ones, twos = verdict_token_ids(processor.tokenizer)
    tok = processor.tokenizer
    assert {tok.decode([i]) for i in ones} == {"1", " 1"} and {tok.decode([i]) for i in twos} == {"2", " 2"}


def test_the_probability_is_read_at_the_verdict_token(coin_judge_dir, synth_pairs_list):
    """The coin judge writes a verdict: its probability must be the teacher-forced distribution at that digit."""
    from egt.model.generation import next_token_logits

    judge = RewardJudge.from_pretrained(coin_judge_dir, max_new_tokens=24, device="cpu", batch_size=8)
    pairs = synth_pairs_list[:4]
    rewards = judge.score(pairs)
    backend = judge.backend
    tokenizer = backend.processor.tokenizer
    checked = 0
    for pair, reward in zip(pairs, rewards):
        for trace, order in zip(reward.comparison.traces, ("given", "swapped")):
            assert trace.verdict in (1, 2), trace.text
            view = pair.in_order(order)
            ids = tokenizer(trace.text, add_special_tokens=False)["input_ids"]
            digit = next(i for i in range(len(ids)) if tokenizer.decode(ids[:i + 1]).endswith(str(trace.verdict))
                         and "<answer>" in tokenizer.decode(ids[:i + 1]))
            forced = next_token_logits(backend.model, backend.processor, [view], [ids[:digit]], backend.watch)[0]
            expected = sigmoid(two_way_logit(forced.tolist(), len(backend.ones)))
            assert reward.prob_by_order[order] == pytest.approx(expected if order == "given" else 1 - expected, abs=1e-4)
            # greedy: the digit written is the more likely answer
            assert (expected > 0.5) == (trace.verdict == 1)
            checked += 1
        assert reward.answer_forced == 0
    assert checked == 8


def test_a_judgement_without_a_verdict_gets_a_forced_answer(tiny_model_dir, synth_pairs_list):
    judge = RewardJudge.from_pretrained(tiny_model_dir, max_new_tokens=4, device="cpu")
    reward = judge.score(synth_pairs_list[:1])[0]
    assert reward.answer_forced == 2 and all(t.verdict is None for t in reward.comparison.traces)
    assert 0 < reward.prob_1 < 1 and all(0 < p < 1 for p in reward.prob_by_order.values())


def test_batching_changes_the_probabilities_only_in_float_noise(coin_judge_dir, synth_pairs_list):
    """The same pair judged alone and inside a batch of 8 (other pairs, other lengths: padding): the tolerance that
    docs/serve.md states (1e-5) holds, and the texts are identical."""
    alone_judge = RewardJudge.from_pretrained(coin_judge_dir, max_new_tokens=24, device="cpu", batch_size=1)
    batch_judge = RewardJudge.from_pretrained(coin_judge_dir, max_new_tokens=24, device="cpu", batch_size=16)
    pairs = synth_pairs_list[:8]
    alone = [alone_judge.score([p])[0] for p in pairs[:2]]
    batched = batch_judge.score(pairs)[:2]
    for a, b in zip(alone, batched):
        assert [t.text for t in a.comparison.traces] == [t.text for t in b.comparison.traces]
        assert b.prob_1 == pytest.approx(a.prob_1, abs=1e-5)


@pytest.mark.heavy  # 4 sampled judgements twice and a swapped pair (~8 s): make test-heavy
def test_sampled_mode_is_reproducible_by_content(coin_judge_dir, synth_pairs_list):
    judge = RewardJudge.from_pretrained(coin_judge_dir, max_new_tokens=24, device="cpu", samples=2, temperature=1.0)
    pair = synth_pairs_list[0]
    first, again = judge.score([pair])[0], judge.score([pair, synth_pairs_list[1]])[0]
    assert first.prob_1 == pytest.approx(again.prob_1, abs=1e-5) and first.comparison.n_judgements == 4
    swapped = judge.score([make_pair(pair.images, pair.question, pair.response_2, pair.response_1)])[0]
    assert swapped.prob_1 == pytest.approx(1 - first.prob_1, abs=1e-5)
