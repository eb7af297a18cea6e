"""GRPO rewards for the judge: format, accuracy, logic, and their composite.

Every reward has TRL's reward-function signature `(completions, **columns) ->
list[float]`; a completion is a string or a conversational list of
`{"role", "content"}` messages (the last assistant turn is read). Verdicts are
read only by `egt.core.prompts.parse_verdict`, so the reward and the evaluation
always agree.

    reward = w_f * format + accuracy * (1 + w_l * logic)        (docs/definitions.md)

- format:   1 only for exactly `<think>..</think><answer>1|2</answer>` (Verdict.format_ok).
- accuracy: 1 if the parsed verdict equals the pair's `label`, else 0 (never raises).
- logic:    +1 / -1 / 0 when the conclusion the reasoning states agrees with /
            contradicts the verdict / cannot be told. Rule-based by default
            (`rule_logic`); optionally an LLM behind an OpenAI-compatible
            endpoint (`LLMLogicJudge`).

TRL sums weighted reward functions and logs each one (`rewards/<name>/mean`),
so `reward_functions()` returns format_reward, accuracy_reward, logic_reward
and accuracy_x_logic_reward with weights [w_f, 1, 0, w_l]: the weighted sum is
exactly the composite, and logic itself (weight 0) is logged for monitoring.

The rewards here train a judge. To train a *policy* with a trained judge as its reward, see
`egt.judge.trl_reward.JudgeReward` (kept apart: it loads a model, and it uses `completion_text` from here).

Departure from R1-Reward: its logic check is an LLM call; here the default is a
rule that reads the last sentences of the <think> block (explicit phrases such
as "Response 2 is better", "so the answer is 1", "Response 1 is wrong") and, when
none is found, a per-response checklist ("Response 1 ...: yes. Response 2 ...:
no." concludes 1).
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from egt.core.config import StageConfig
from egt.core.prompts import parse_verdict

# ---------------------------------------------------------------- completions


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the last message of a conversation."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)) and completion:
        content = completion[-1].get("content") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, str):
            return content
        if isinstance(content, (list, tuple)):  # content blocks
            return "".join(part.get("text") or "" for part in content
                           if isinstance(part, dict) and part.get("type", "text") == "text")
    return ""


def _label_int(label: Any) -> int | None:
    try:
        value = int(label)
    except (TypeError, ValueError):
        return None
    return value if value in (1, 2) else None


# ---------------------------------------------------------------- logic rules

_RESP = r"(?:response|output|answer|option|candidate)\s*#?\s*(?P<n>[12])\b"
_GOOD = (r"better|best|correct|right|accurate|more\s+accurate|preferred|preferable|superior|"
         r"the\s+better(?:\s+one)?|the\s+(?:correct|right|best)\s+one|consistent\s+with\s+the\s+image|"
         r"faithful|grounded")
_BAD = (r"worse|worst|wrong|incorrect|inaccurate|less\s+accurate|false|mistaken|inferior|"
        r"hallucinat\w*|inconsistent\s+with\s+the\s+image|flawed|unfaithful")
_NOT = r"(?:not|never|no\s+longer)"
# Text between a response's name and what is said about it; never crosses another response's name.
_GAP = r"(?:(?!response|output|answer|option|candidate|\bbut\b|\bwhereas\b|\bwhile\b|\bthan\b)[^.;!?]){0,80}?"
# "Response 2 is (not) better", "Response 1 was wrong", "Response 2 seems more accurate"
_ADJ_CLAUSE = re.compile(
    _RESP + _GAP + r"\b(?:is|was|seems|appears|looks|remains)(?P<neg>\s+" + _NOT + r")?"
    r"\s+(?:clearly\s+|slightly\s+|much\s+|the\s+more\s+|more\s+|also\s+)?(?P<adj>" + _GOOD + "|" + _BAD + r")\b",
    re.I)
_ISNT = re.compile(_RESP + r"\s+(?:isn't|wasn't)\s+(?P<adj>" + _GOOD + "|" + _BAD + r")\b", re.I)
# "Response 1 matches the image", "Response 2 does not match", "Response 1 contains errors"
_VERB_CLAUSE = re.compile(
    _RESP + _GAP + r"\b(?P<neg>does\s+not\s+|doesn't\s+|did\s+not\s+|didn't\s+)?"
    r"(?P<verb>matches|match|wins|win|describes\s+the\s+image\s+correctly|contains?\s+(?:an?\s+)?errors?|"
    r"makes?\s+(?:an?\s+)?(?:error|mistake)s?|contradicts|misidentifies|misses)\b", re.I)
# "the answer is 1", "final verdict: Response 2", "I choose Response 1", "so 2 is better"
_CHOICE = re.compile(
    r"(?:(?:final\s+)?(?:answer|verdict|choice|conclusion)\s*(?:is|:|=)\s*|"
    r"\b(?:choose|pick|prefer|select|go\s+with)\s+)(?:the\s+)?(?:response|output|option)?\s*#?\s*(?P<n>[12])\b",
    re.I)
_BARE_BETTER = re.compile(r"\b(?P<n>[12])\s+is\s+(?:the\s+)?(?P<adj>better|correct|right|best)\b", re.I)
# Checklist line: "Response 1 green circle: yes." / "Response 2 ...: no" / "... - correct"
_CHECK = re.compile(
    _RESP + r"[^.:;!?\n]{0,80}?[:\-—]\s*(?P<mark>yes|no|correct|incorrect|right|wrong|true|false|"
    r"matches|does\s+not\s+match|ok|not\s+ok)\b", re.I)
_POSITIVE_MARKS = {"yes", "correct", "right", "true", "matches", "ok"}
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")

LAST_SENTENCES = 3


def _is_good(adj: str) -> bool:
    return re.fullmatch(_BAD, adj.strip(), re.I) is None


def sentence_conclusion(sentence: str) -> int | None | str:
    """The response (1|2) one sentence names as better; None if it names none; 'conflict' if both."""
    votes: set[int] = set()
    for m in list(_ADJ_CLAUSE.finditer(sentence)) + list(_ISNT.finditer(sentence)):
        good = _is_good(m.group("adj"))
        negated = bool(m.groupdict().get("neg")) or m.re is _ISNT
        n = int(m.group("n"))
        votes.add(n if good != negated else 3 - n)
    for m in _VERB_CLAUSE.finditer(sentence):
        verb = m.group("verb").lower()
        good = verb.startswith(("match", "win", "describes"))
        negated = bool(m.group("neg"))
        n = int(m.group("n"))
        votes.add(n if good != negated else 3 - n)
    for m in list(_CHOICE.finditer(sentence)) + list(_BARE_BETTER.finditer(sentence)):
        votes.add(int(m.group("n")))
    if not votes:
        return None
    return votes.pop() if len(votes) == 1 else "conflict"


def checklist_conclusion(reasoning: str) -> int | None:
    """Per-response yes/no checklist: the response marked yes while the other is no (last mark wins)."""
    marks: dict[int, bool] = {}
    for m in _CHECK.finditer(reasoning):
        marks[int(m.group("n"))] = m.group("mark").lower() in _POSITIVE_MARKS
    if len(marks) == 2 and marks[1] != marks[2]:
        return 1 if marks[1] else 2
    return None


def reasoning_conclusion(reasoning: str | None, last_sentences: int = LAST_SENTENCES) -> int | None:
    """Which response the reasoning concludes is better, or None when it cannot be told.

    The last `last_sentences` sentences are read from the end; the first one that
    names a response decides (a sentence naming both ways gives None). Without an
    explicit phrase, a per-response yes/no checklist anywhere in the reasoning decides.
    """
    if not reasoning or not reasoning.strip():
        return None
    sentences = [s for s in _SENTENCE_SPLIT.split(reasoning.strip()) if s.strip()]
    for sentence in reversed(sentences[-last_sentences:]):
        found = sentence_conclusion(sentence)
        if found == "conflict":
            return None
        if found is not None:
            return found
    return checklist_conclusion(reasoning)


def rule_logic(completion: Any) -> int:
    """+1 / -1 / 0: the reasoning's conclusion agrees with / contradicts the verdict / unknown."""
    verdict = parse_verdict(completion_text(completion))
    if verdict.verdict is None or verdict.think is None:
        return 0
    conclusion = reasoning_conclusion(verdict.think)
    if conclusion is None:
        return 0
    return 1 if conclusion == verdict.verdict else -1


# ---------------------------------------------------------------- LLM logic judge

LLM_LOGIC_PROMPT = (
    "Below is a judge's reasoning comparing two responses, and the verdict it gave.\n"
    "Does the conclusion the reasoning reaches agree with the verdict?\n"
    "Reply with exactly one word: AGREE, CONTRADICT, or UNCLEAR.\n\n"
    "Reasoning:\n{think}\n\nVerdict: Response {verdict} is better."
)


class LLMLogicJudge:
    """Logic reward from an LLM behind an OpenAI-compatible endpoint (vLLM, SGLang, a hosted API).

    Faults follow egt.core.endpoint, shared with the distill teacher: the key comes from the environment
    variable named `api_key_env` (unset: ConfigError naming it; never logged or stored); 401/403/404
    stop the run (EndpointRefused: a wrong key or model would otherwise score every completion 0), and
    so does a 400 naming one of the parameters it sends (temperature, max_tokens); timeouts, connection
    errors, 429, 5xx and malformed replies are retried with backoff and jitter. Each completion is
    asked once: answers are cached by the SHA-256 of (verdict, reasoning). Fallbacks are counted:
    a request that still fails after `max_retries` retries or is refused (`failures`) or an unreadable reply
    (`unreadable`) scores 0; `stats()` has every count and `egt rl` logs them.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None,
                 timeout_s: float = 30.0, max_retries: int = 2, max_workers: int = 8,
                 retry_backoff_s: float = 0.5, max_tokens: int = 8, backoff_max_s: float = 10.0):
        from egt.core.endpoint import Endpoint, RetryPolicy

        fixed = "the LLM logic judge always sends temperature 0 and max_tokens: use an endpoint that takes them"
        self.endpoint = Endpoint(base_url, model, api_key_env, timeout_s,
                                 RetryPolicy(max_retries, retry_backoff_s, backoff_max_s), what="LLM logic judge",
                                 param_hints={"temperature": fixed, "max_tokens": fixed})
        self.model = model
        self.max_workers = max_workers
        self.max_tokens = max_tokens
        self.cache: dict[str, int] = {}
        self.failures = 0      # requests that failed after their retries: scored 0
        self.unreadable = 0    # replies that were not AGREE / CONTRADICT / UNCLEAR: scored 0
        self._lock = threading.Lock()
        self._last_batch: tuple[tuple, list[int]] | None = None

    @property
    def requests(self) -> int:
        return self.endpoint.stats.requests

    def stats(self) -> dict:
        """Requests, retries and fallbacks (failures, unreadable replies: each scored 0)."""
        counts = self.endpoint.stats.as_dict()
        return {"requests": counts["requests"], "retries": counts["retries"], "failures": self.failures,
                "unreadable": self.unreadable, "fallbacks": self.failures + self.unreadable,
                "cached": len(self.cache)}

    @staticmethod
    def cache_key(think: str, verdict: int) -> str:
        return hashlib.sha256(f"{verdict}\x00{think}".encode("utf-8")).hexdigest()

    @staticmethod
    def read_reply(reply: str) -> int | None:
        words = re.findall(r"[a-z]+", (reply or "").lower())
        for word in words:
            if word in ("agree", "agrees", "yes", "consistent"):
                return 1
            if word in ("contradict", "contradicts", "disagree", "disagrees", "no", "inconsistent"):
                return -1
            if word in ("unclear", "unknown", "cannot"):
                return 0
        return None

    def _ask(self, think: str, verdict: int) -> int:
        key = self.cache_key(think, verdict)
        with self._lock:
            if key in self.cache:
                return self.cache[key]
        messages = [{"role": "user", "content": LLM_LOGIC_PROMPT.format(think=think, verdict=verdict)}]
        result = self.endpoint.chat(messages, random.Random(key), temperature=0.0, max_tokens=self.max_tokens)
        if result.reply is None or result.error_class:  # failed after its retries, or refused
            with self._lock:
                self.failures += 1
            return 0
        value = self.read_reply(result.reply.content)
        with self._lock:
            if value is None:  # a reply at temperature 0 says the same when asked again: no retry
                self.unreadable += 1
                return 0
            self.cache[key] = value
        return value

    def __call__(self, completions: list, **_: Any) -> list[int]:
        """One logic value per completion. The same batch asked twice in a row (the `logic` and
        `accuracy_x_logic` rewards of one step) is answered from memory, failures included."""
        texts = tuple(completion_text(c) for c in completions)
        if self._last_batch is not None and self._last_batch[0] == texts:
            return list(self._last_batch[1])
        jobs = []
        for text in texts:
            verdict = parse_verdict(text)
            jobs.append((verdict.think, verdict.verdict) if verdict.parsed and verdict.think else None)
        out = [0] * len(jobs)
        todo = [(i, job) for i, job in enumerate(jobs) if job is not None]
        with ThreadPoolExecutor(max_workers=max(1, self.max_workers)) as pool:
            for i, value in zip([i for i, _ in todo], pool.map(lambda job: self._ask(*job[1]), todo)):
                out[i] = value
        self._last_batch = (texts, list(out))
        return out


# ---------------------------------------------------------------- TRL reward functions


def format_reward(completions: list, **_: Any) -> list[float]:
    return [1.0 if parse_verdict(completion_text(c)).format_ok else 0.0 for c in completions]


def accuracy_reward(completions: list, label: list, **_: Any) -> list[float]:
    return [1.0 if parse_verdict(completion_text(c)).verdict == _label_int(y) else 0.0
            for c, y in zip(completions, label, strict=True)]


LogicFn = Callable[..., list]


def _logic_values(logic: LogicFn | None, completions: list, kwargs: dict) -> list[int]:
    if logic is None:
        return [rule_logic(c) for c in completions]
    return [int(v) for v in logic(completions, **kwargs)]


def make_logic_reward(logic_fn: LogicFn | None = None) -> Callable[..., list[float]]:
    """The logic value as a TRL reward function (rule-based when `logic_fn` is None)."""

    def logic_reward(completions: list, **kwargs: Any) -> list[float]:
        values = _logic_values(logic_fn, completions, kwargs)
        if isinstance(logic_fn, LLMLogicJudge) and callable(kwargs.get("log_metric")):
            stats = logic_fn.stats()
            for name in ("failures", "unreadable", "retries"):
                kwargs["log_metric"](f"logic_judge_{name}", float(stats[name]))
        return [float(v) for v in values]

    return logic_reward


def make_accuracy_x_logic_reward(logic: LogicFn | None = None) -> Callable[..., list[float]]:
    """accuracy * logic: the term weighted by w_l in the composite."""

    def accuracy_x_logic_reward(completions: list, label: list, **kwargs: Any) -> list[float]:
        accuracy = accuracy_reward(completions, label)
        values = _logic_values(logic, completions, {k: v for k, v in kwargs.items() if k != "label"})
        return [a * float(v) for a, v in zip(accuracy, values, strict=True)]

    return accuracy_x_logic_reward


def composite_reward(completions: list, label: list, w_format: float = 0.5, w_logic: float = 0.5,
                     w_accuracy: float = 1.0, logic: LogicFn | None = None, **kwargs: Any) -> list[float]:
    """`w_format * format + accuracy * (w_accuracy + w_logic * logic)` per completion (w_accuracy = 1: the paper's)."""
    fmt = format_reward(completions)
    acc = accuracy_reward(completions, label)
    log = _logic_values(logic, completions, kwargs)
    return [w_format * f + a * (w_accuracy + w_logic * float(l)) for f, a, l in zip(fmt, acc, log, strict=True)]


def reward_functions(w_format: float = 0.5, w_logic: float = 0.5, w_accuracy: float = 1.0,
                     logic: LogicFn | None = None) -> tuple[list[Callable], list[float]]:
    """TRL `reward_funcs` and `reward_weights` whose weighted sum is the composite reward.

    [format, accuracy, logic, accuracy x logic] with weights [w_format, w_accuracy, 0, w_logic]
    (w_accuracy = 1 is the paper's composite; `logic` is logged only).
    """
    funcs = [format_reward, accuracy_reward, make_logic_reward(logic), make_accuracy_x_logic_reward(logic)]
    return funcs, [float(w_format), float(w_accuracy), 0.0, float(w_logic)]


# ---------------------------------------------------------------- config

class LogicJudgeConfig(StageConfig):
    """Optional LLM logic judge (OpenAI-compatible endpoint). The key comes from env var `api_key_env`
    (must be set when named; null: the server needs no key)."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    max_workers: int = 8


def build_logic(cfg: LogicJudgeConfig | None) -> LogicFn | None:
    """None (rule-based logic) or an `LLMLogicJudge` for the configured endpoint."""
    if cfg is None:
        return None
    return LLMLogicJudge(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s,
                         max_retries=cfg.max_retries, max_workers=cfg.max_workers,
                         retry_backoff_s=cfg.backoff_base_s, backoff_max_s=cfg.backoff_max_s)
