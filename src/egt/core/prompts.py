"""The judge prompt and THE verdict parser (shared by rewards, scoring and eval).

Output format (the one R1-Reward checkpoints use, so they work unchanged):

    <think> ...comparison... </think><answer>1</answer>      (or 2)

`parse_verdict` is the only place that reads a verdict out of a completion, so
the RL reward, the entropy scorer and the evaluation always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

JUDGE_INSTRUCTION = (
    "You judge two responses to a question about the image. Compare them step by step "
    "inside <think></think>, then write the number of the better response, 1 or 2, "
    "inside <answer></answer>."
)

# The four tags are ordinary (non-special) tokens in the tiny model: TRL decodes
# completions with skip_special_tokens=True, which would strip special ones.
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def judge_prompt_text(question: str, response_1: str, response_2: str) -> str:
    return (f"{JUDGE_INSTRUCTION}\nQuestion: {question}\n"
            f"Response 1: {response_1}\nResponse 2: {response_2}")


def judge_messages(question: str, response_1: str, response_2: str, n_images: int = 1) -> list[dict]:
    """One user turn: the image slot(s) first, then the prompt text (chat-template form)."""
    content = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": judge_prompt_text(question, response_1, response_2)})
    return [{"role": "user", "content": content}]


def format_judgement(think: str, verdict: int) -> str:
    """The canonical completion for a trace and a verdict."""
    return f"<think>{think}</think><answer>{verdict}</answer>"


@dataclass(frozen=True)
class Verdict:
    verdict: int | None        # 1, 2, or None when no verdict can be read
    think: str | None          # text inside <think>...</think>, if present
    format_ok: bool            # exactly <think>..</think><answer>1|2</answer>, nothing else
    verdict_char: int | None   # index in the completion of the verdict digit
    reason: str = ""           # why format_ok is False / verdict is None

    @property
    def parsed(self) -> bool:
        return self.verdict is not None


_STRICT = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>\s*(?P<v>[12])\s*</answer>\s*", re.S)
_ANSWER = re.compile(r"<answer>(?P<body>.*?)</answer>", re.S)
_UNCLOSED = re.compile(r"<answer>\s*(?P<v>[12])\s*$", re.S)
_BODY = re.compile(r"\s*(?:the\s+)?(?:better\s+)?(?:response|output|answer)?\s*#?\s*(?P<v>[12])\s*\.?\s*$",
                   re.I | re.S)


def _count_tags(text: str) -> dict:
    return {tag: text.count(tag) for tag in TAGS}


def parse_verdict(completion: str | None) -> Verdict:
    """Read the verdict of one judgement.

    Lenient on the verdict, strict on the format: `<answer>Response 2</answer>`,
    an unclosed final `<answer>2` or trailing text still give a verdict but
    `format_ok=False`; two answer tags that disagree give no verdict; an answer
    written inside <think> is ignored; digits outside <answer> never count.
    """
    text = completion or ""
    if not text.strip():
        return Verdict(None, None, False, None, "empty output")
    counts = _count_tags(text)
    think_match = re.search(r"<think>(.*?)</think>", text, re.S)
    think = think_match.group(1) if think_match else None
    strict = _STRICT.fullmatch(text)
    format_ok = bool(strict) and all(n == 1 for n in counts.values())

    # Look for answers outside the first think block only.
    search_from = think_match.end() if think_match else 0
    outside = text[search_from:]
    candidates = []
    for m in _ANSWER.finditer(outside):
        body = _BODY.fullmatch(m.group("body"))
        if body:
            candidates.append((int(body.group("v")), search_from + m.start("body") + body.start("v")))
        else:
            candidates.append((None, None))
    if not candidates:
        m = _UNCLOSED.search(outside)
        if m:
            return Verdict(int(m.group("v")), think, False, search_from + m.start("v"), "missing </answer>")
        return Verdict(None, think, False, None, "no <answer> tag")
    values = {v for v, _ in candidates}
    if len(candidates) > 1 and len(values) > 1:
        return Verdict(None, think, False, None, "answer tags disagree")
    verdict, char = candidates[-1]
    if verdict is None:
        return Verdict(None, think, False, None, "answer is not 1 or 2")
    if format_ok:
        return Verdict(verdict, think, True, char)
    if think is None:
        reason = "no <think> block"
    elif len(candidates) > 1:
        reason = "more than one <answer> tag"
    elif any(n != 1 for n in counts.values()):
        reason = "repeated or stray tags"
    else:
        reason = "text outside the tags or non-canonical answer"
    return Verdict(verdict, think, False, char, reason)
