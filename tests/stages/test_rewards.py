"""Rewards on hand-written completions: every branch, malformed and adversarial inputs,
and the LLM logic judge against a real loopback HTTP server."""

from __future__ import annotations

import pytest
from helpers import FakeOpenAIServer, api_error, chat_completion

from egt.core.endpoint import EndpointRefused
from egt.core.errors import ConfigError
from egt.stages import rewards
from egt.stages.rewards import (
    LLMLogicJudge,
    accuracy_reward,
    completion_text,
    composite_reward,
    format_reward,
    reasoning_conclusion,
    reward_functions,
    rule_logic,
)

CANON_1 = "<think>I see green circle. Response 1 green circle: yes. Response 2 red circle: no.</think><answer>1</answer>"


def t(think: str, verdict: str = "1", tail: str = "") -> str:
    return f"<think>{think}</think><answer>{verdict}</answer>{tail}"


# ---------------------------------------------------------------- format + accuracy

FORMAT_CASES = [
    (CANON_1, 1.0, 1),
    ("  <think>x</think>\n<answer> 2 </answer>\n", 1.0, 2),         # whitespace around tags is fine
    ("", 0.0, None),                                                 # empty
    (None, 0.0, None),
    ("<answer>1</answer>", 0.0, 1),                                  # no think
    ("<think>x</think><answer>1</answer> trailing", 0.0, 1),         # trailing text
    ("<think>x</think><answer>1</answer><answer>2</answer>", 0.0, None),   # two answers disagree
    ("<think>x</think><answer>2</answer><answer>2</answer>", 0.0, 2),      # two answers agree
    ("<think>x <answer>2</answer></think><answer>1</answer>", 0.0, 1),     # answer inside think ignored
    ("<think>x <answer>2</answer></think>", 0.0, None),              # only an answer inside think
    ("<think>x</think><answer>Response 2</answer>", 0.0, 2),         # lenient verdict, wrong format
    ("<think>x</think><answer>3</answer>", 0.0, None),
    ("<think>x</think><answer>2", 0.0, 2),                           # unclosed answer
    ("<think>x</think><think>y</think><answer>1</answer>", 0.0, 1),  # two think blocks
    ("The better one is 2.", 0.0, None),                             # digits outside tags never count
]


@pytest.mark.parametrize("completion,fmt,verdict", FORMAT_CASES)
def test_format_and_accuracy_per_case(completion, fmt, verdict):
    assert format_reward([completion]) == [fmt]
    for label in (1, 2):
        assert accuracy_reward([completion], label=[label]) == [1.0 if verdict == label else 0.0]


def test_accuracy_never_raises_on_odd_labels_and_types():
    assert accuracy_reward([CANON_1, CANON_1, CANON_1, 42], label=["1", None, 1.0, 1]) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError):  # lengths must match: a TRL wiring bug, not a reward
        accuracy_reward([CANON_1], label=[1, 2])


def test_conversational_completions():
    conv = [{"role": "assistant", "content": CANON_1}]
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": CANON_1}]}]
    assert completion_text(conv) == completion_text(blocks) == CANON_1
    assert format_reward([conv, blocks]) == [1.0, 1.0]
    assert accuracy_reward([conv, blocks], label=[1, 2]) == [1.0, 0.0]
    assert completion_text([]) == "" and completion_text(None) == ""


# ---------------------------------------------------------------- logic

LOGIC_CASES = [
    # oracle-style checklists (all four synth phrasings)
    (CANON_1, 1),
    (CANON_1.replace("<answer>1", "<answer>2"), -1),
    (t("The image shows a cube. Response 1 says cube: no. Response 2 says ball: yes.", "2"), 1),
    (t("I see a cube. Response 1, cube, is right. Response 2, ball, is wrong.", "1"), 1),
    (t("There is a cube. Response 1 claims a ball, which is incorrect. "
       "Response 2 claims a cube, which is correct.", "1"), -1),
    (t("Response 1 red: yes. Response 2 blue: yes.", "1"), 0),        # checklist cannot decide
    (t("Response 1 red: no. Response 2 blue: no.", "2"), 0),
    # general phrasings
    (t("Both mention a dog. Response 2 is better.", "2"), 1),
    (t("Both mention a dog. Response 2 is better.", "1"), -1),
    (t("Looking closely, so the answer is 1.", "1"), 1),
    (t("Final verdict: Response 2.", "1"), -1),
    (t("I would choose Response 1.", "1"), 1),
    (t("Response 1 is not correct.", "2"), 1),
    (t("Response 2 isn't accurate.", "2"), -1),
    (t("Response 1 does not match the image.", "1"), -1),
    (t("Response 2 matches the image.", "2"), 1),
    (t("Response 1 contains errors.", "2"), 1),
    (t("Response 1 hallucinates a cat.", "1"), 0),                     # verb not in the rule list
    (t("Response 1 is better than Response 2.", "1"), 1),
    (t("Response 2 is worse than Response 1.", "1"), 1),
    (t("Response 1 is good but Response 2 is wrong.", "1"), 1),
    # adversarial
    (t("Response 1 is better? No, Response 2 is better.", "1"), -1),   # the last sentence decides
    (t("Response 2 is better. Then again, Response 1 is better.", "1"), 1),
    (t("Response 1 is better and Response 1 is wrong.", "1"), 0),      # one sentence, both ways
    (t("Response 1 is better. A. B. C.", "1"), 0),                      # conclusion outside the last 3 sentences
    (t("Hmm.", "1"), 0),
    (t("", "1"), 0),
    ("<answer>1</answer>", 0),                                          # no reasoning
    (t("Response 1 is better.", "1", tail=" extra"), 1),                # format broken, logic still read
    ("<think>Response 1 is better.</think><answer>1</answer><answer>2</answer>", 0),  # no verdict
    ("", 0),
]


@pytest.mark.parametrize("completion,expected", LOGIC_CASES)
def test_rule_logic(completion, expected):
    assert rule_logic(completion) == expected


def test_reasoning_conclusion_window():
    assert reasoning_conclusion("Response 2 is better. x. y.", last_sentences=3) == 2
    assert reasoning_conclusion("Response 2 is better. x. y.", last_sentences=2) is None
    assert reasoning_conclusion(None) is None


def test_rule_logic_agrees_with_every_synth_phrasing(tmp_path):
    synth = pytest.importorskip("egt.data.synth")
    pairs = synth.generate_pairs("train", 12, 0, "none", tmp_path)
    for pair in pairs:
        for template_index in range(len(synth._TEMPLATES)):
            class Pick:
                def choice(self, options, i=template_index):
                    return options[i]
            for faithful in (True, False):
                assert rule_logic(synth.oracle_trace(pair, faithful, Pick())) == 1


# ---------------------------------------------------------------- composite

def test_composite_matches_hand_computed_values():
    right_agree = CANON_1                                                   # f=1 a=1 l=+1
    right_contra = t("Response 2 is better.", "1")                           # f=1 a=1 l=-1
    wrong = t("Response 2 is better.", "2")                                  # f=1 a=0 l=+1
    unformatted_right = t("Response 1 is better.", "1", tail="!")            # f=0 a=1 l=+1
    garbage = "no idea"                                                      # f=0 a=0 l=0
    completions = [right_agree, right_contra, wrong, unformatted_right, garbage]
    labels = [1] * 5
    assert composite_reward(completions, label=labels) == [2.0, 1.0, 0.5, 1.5, 0.0]
    assert composite_reward(completions, label=labels, w_format=1.0, w_logic=0.0) == [2.0, 2.0, 1.0, 1.0, 0.0]
    assert composite_reward(completions, label=labels, w_accuracy=2.0) == [3.0, 2.0, 0.5, 2.5, 0.0]


def test_trl_functions_weighted_sum_equals_composite():
    completions = [CANON_1, t("Response 2 is better.", "1"), t("Response 2 is better.", "2"),
                   t("x", "1", tail="!"), "", "<think>a</think><answer>Response 1</answer>"]
    labels = [1, 1, 1, 2, 1, 1]
    for w_f, w_l in [(0.5, 0.5), (0.2, 1.0), (0.0, 0.0)]:
        funcs, weights = reward_functions(w_format=w_f, w_logic=w_l)
        assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward", "logic_reward", "accuracy_x_logic_reward"]
        columns = [f(completions, label=labels, trainer_state=None, log_metric=None) for f in funcs]
        summed = [sum(w * col[i] for w, col in zip(weights, columns)) for i in range(len(completions))]
        assert summed == pytest.approx(composite_reward(completions, label=labels, w_format=w_f, w_logic=w_l))
    assert columns[2] == [1.0, -1.0, 1.0, 0.0, 0.0, 0.0]   # logic logged as is (weight 0)


# ---------------------------------------------------------------- LLM logic judge (loopback HTTP)

def _logic_reply(method, path, headers, body):
    """AGREE if the reasoning names the verdict's response, else CONTRADICT; 'FAIL' in the reasoning ->
    HTTP 500, 'GIBBERISH' -> an unreadable reply, 'DENY' -> HTTP 401."""
    prompt = body["messages"][0]["content"]
    if "FAIL" in prompt:
        return api_error(500, "boom")
    if "DENY" in prompt:
        return api_error(401, "bad key")
    verdict = prompt.rsplit("Verdict: Response ", 1)[1][0]
    reasoning = prompt.split("Reasoning:\n", 1)[1].split("\n\nVerdict:")[0]
    word = "GIBBERISH" if "GIBBERISH" in reasoning else (
        "AGREE" if f"Response {verdict}" in reasoning else "CONTRADICT")
    return 200, chat_completion(word, body["model"]), {}


@pytest.fixture
def fake_endpoint():
    with FakeOpenAIServer(_logic_reply) as server:
        yield server


def test_llm_logic_judge(fake_endpoint, monkeypatch):
    monkeypatch.setenv("EGT_TEST_KEY", "sk-secret")
    judge = LLMLogicJudge(fake_endpoint.base_url, "judge-model", api_key_env="EGT_TEST_KEY", timeout_s=5,
                          max_retries=1, retry_backoff_s=0.01, max_workers=2)
    completions = [t("Response 1 looks fine.", "1"), t("Response 2 looks fine.", "1"),
                   t("FAIL here.", "1"), t("GIBBERISH.", "2"), "no verdict at all"]
    assert judge(completions) == [1, -1, 0, 0, 0]
    # the 500 fails after its retry; the unreadable reply is not asked again (temperature 0)
    assert (judge.failures, judge.unreadable) == (1, 1)
    assert len(fake_endpoint.requests) == 5           # 2 ok + 500 x (1 + 1 retry) + 1 unreadable
    assert {headers.get("authorization") for _, _, headers, _ in fake_endpoint.requests} == {"Bearer sk-secret"}
    assert judge.stats() == {"requests": 5, "retries": 1, "failures": 1, "unreadable": 1, "fallbacks": 2,
                             "cached": 2}
    # the same batch twice in a row (logic and accuracy_x_logic of one step) is answered from memory
    assert judge(completions) == [1, -1, 0, 0, 0] and len(fake_endpoint.requests) == 5
    # a new batch: the two good answers come from the cache, the failure is asked again
    assert judge(completions[:3]) == [1, -1, 0]
    assert len(fake_endpoint.requests) == 7 and judge.failures == 2
    # as TRL reward functions, with the fallback counters logged as metrics
    funcs, weights = reward_functions(logic=judge)
    metrics = {}
    out = funcs[2](completions[:2], label=[1, 1], log_metric=lambda k, v: metrics.__setitem__(k, v))
    assert out == [1.0, -1.0]
    assert metrics == {"logic_judge_failures": 2.0, "logic_judge_unreadable": 1.0, "logic_judge_retries": 2.0}
    assert funcs[3](completions[:2], label=[1, 2]) == [1.0, -0.0]


def test_llm_logic_judge_stops_on_a_refused_key(fake_endpoint, monkeypatch):
    monkeypatch.setenv("EGT_TEST_KEY", "sk-wrong")
    judge = LLMLogicJudge(fake_endpoint.base_url, "judge-model", api_key_env="EGT_TEST_KEY", timeout_s=5,
                          max_retries=3, retry_backoff_s=0.01)
    with pytest.raises(EndpointRefused, match=r"LLM logic judge .* refused the request \(HTTP 401\).*EGT_TEST_KEY"):
        judge([t("DENY this.", "1")])
    assert len(fake_endpoint.requests) == 1        # no retry: every request would be refused alike
    with pytest.raises(EndpointRefused):            # and the run stays stopped
        judge([t("Response 1 looks fine.", "1")])
    assert len(fake_endpoint.requests) == 1


def test_llm_logic_judge_names_a_missing_key_variable(monkeypatch):
    monkeypatch.delenv("EGT_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable EGT_TEST_KEY .* is not set"):
        LLMLogicJudge("http://127.0.0.1:9/v1", "m", api_key_env="EGT_TEST_KEY")
    with pytest.raises(ConfigError, match="EGT_TEST_KEY"):
        rewards.build_logic(rewards.LogicJudgeConfig(base_url="http://127.0.0.1:9/v1", model="m",
                                                     api_key_env="EGT_TEST_KEY"))


def test_llm_logic_judge_unreachable_endpoint_scores_zero():
    judge = LLMLogicJudge("http://127.0.0.1:9/v1", "m", api_key_env=None, timeout_s=0.5,
                          max_retries=0, retry_backoff_s=0.0)
    assert judge([CANON_1]) == [0] and judge.failures == 1 and judge.stats()["fallbacks"] == 1


def test_build_logic_from_config():
    assert rewards.build_logic(None) is None
    cfg = rewards.LogicJudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=None)
    assert isinstance(rewards.build_logic(cfg), LLMLogicJudge)
