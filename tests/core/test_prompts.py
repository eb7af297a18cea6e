"""The one verdict parser: lenient on the verdict, strict on the format."""

from __future__ import annotations

import pytest

from egt.core.prompts import format_judgement, judge_messages, judge_prompt_text, parse_verdict


@pytest.mark.parametrize("text, verdict, format_ok", [
    ("<think>a</think><answer>1</answer>", 1, True),
    ("  <think> a </think>\n <answer> 2 </answer>\n", 2, True),              # extra whitespace
    ("<think>a</think><answer>1</answer><answer>1</answer>", 1, False),      # two tags that agree
    ("<think>a</think><answer>1</answer><answer>2</answer>", None, False),   # two tags that disagree
    ("<think>a</think><answer>2", 2, False),                                 # missing closing tag
    ("<think>a</think><answer>Response 2</answer>", 2, False),
    ("<think>a</think><answer>response #1.</answer>", 1, False),
    ("<think>Response 1 has 2 errors, 2 > 1</think><answer>1</answer>", 1, True),  # digits elsewhere
    ("", None, False),
    ("   \n", None, False),
    (None, None, False),
    ("<think>a</think><answer>1</answer> because it is right", 1, False),   # text after </answer>
    ("<think>so <answer>2</answer></think><answer>1</answer>", 1, False),    # answer inside think ignored
    ("<think>so <answer>2</answer></think>", None, False),
    ("I think response 2 is better", None, False),                          # digits outside <answer>
    ("<think>x</think><answer>3</answer>", None, False),
    ("<answer>2</answer>", 2, False),                                        # no think block
])
def test_parse_verdict(text, verdict, format_ok):
    parsed = parse_verdict(text)
    assert (parsed.verdict, parsed.format_ok) == (verdict, format_ok)
    assert parsed.parsed == (verdict is not None)
    if verdict is not None:
        assert text[parsed.verdict_char] == str(verdict)
    else:
        assert parsed.verdict_char is None and parsed.reason
    if not format_ok:
        assert parsed.reason


def test_reasons_name_the_problem():
    assert parse_verdict("").reason == "empty output"
    assert parse_verdict("<think>a</think><answer>1</answer><answer>2</answer>").reason == "answer tags disagree"
    assert parse_verdict("<think>a</think><answer>2").reason == "missing </answer>"
    assert parse_verdict("<answer>2</answer>").reason == "no <think> block"
    assert parse_verdict("<think>t</think>").reason == "no <answer> tag"


def test_format_judgement_round_trips():
    text = format_judgement("Response 1 is wrong about 2 cats.", 2)
    parsed = parse_verdict(text)
    assert (parsed.verdict, parsed.format_ok, parsed.think) == (2, True, "Response 1 is wrong about 2 cats.")


def test_judge_messages_image_slots_then_text():
    [turn] = judge_messages("Q?", "r1", "r2", n_images=2)
    assert turn["role"] == "user"
    assert [c["type"] for c in turn["content"]] == ["image", "image", "text"]
    text = turn["content"][-1]["text"]
    assert text == judge_prompt_text("Q?", "r1", "r2")
    assert text.index("Question: Q?") < text.index("Response 1: r1") < text.index("Response 2: r2")
