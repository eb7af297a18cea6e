"""Answer probabilities of a judge, averaged over both orders: the reward `egt serve` returns.

    from egt.judge.probability import RewardJudge
    judge = RewardJudge.from_pretrained("runs/demo/sft/model", calibration="runs/calib/calibration.json")
    r = judge.score([make_pair(image, question, response_1, response_2)])[0]
    r.prob_1, r.verdict, r.orders_agree, r.abstain, r.entropies["max"]

A judgement writes `<think>...</think><answer>k</answer>`. Its answer probability is read from
the judge's own next-token distribution at the verdict token (the position right after
`<answer>`, where the digit is written): the softmax over the vocabulary, renormalised over the
two answers. Each answer is the set of tokens that write the digit alone (`verdict_token_ids`:
"1" and " 1" in a byte-level BPE; their probabilities add), so

    z = log P(answer 1) - log P(answer 2),   P(position 1 better) = sigmoid(z / T)

with T the calibration temperature (1 without calibration; egt.core.calibration). In the swapped
order position 1 holds the caller's response 2, so the pair's probability that response 1 is
better is position-debiased by averaging over both orders (and over the K samples of each):

    prob_1 = mean( P("1") in the given order, P("2") in the swapped order )

Where the numbers come from:
- local checkpoint: the raw logits of every digit token at every generated step are kept
  (egt.model.generation's `watch_token_ids`, two or four columns per step) and read at the step
  that wrote the verdict digit: exact, from the same forward pass that chose the digit. A judgement
  that wrote no verdict (cut off, malformed) gets one: its reasoning up to `</think>` (or all of it,
  closed with `</think>`) is followed by `<answer>` and the digits are read from one teacher-forced
  forward pass (egt.model.generation.next_token_logits); `answer_forced` counts such judgements.
- endpoint (vLLM / OpenAI-compatible): the top log-probs of the verdict token. An answer absent
  from the top k has probability at most min(smallest listed, unlisted mass); that bound is used,
  so the reported probability is the least confident one the top k allow. A judgement without a
  verdict (or without log-probs) has no probability (there is no forcing over a chat API).

A pair's `verdict` is the response with prob > 0.5 (None at exactly 0.5 or when no judgement gave
a probability); `orders_agree` says whether each order on its own prefers the same response (by
its probability; None with one order); `abstain` is True when the calibration's uncertainty metric
is above its threshold (egt calibrate: "probability" = 1 - max(prob_1, prob_2), or an entropy of
egt.model.entropy) or when an order gave no probability (the average is then not debiased).
Entropies, vote shares and traces are egt.judge.api.combine's.

Deterministic mode (samples = 1, the default): greedy reasoning, then the answer probabilities;
the same request gives the same numbers. Batching changes the logits only in the last bits
(padding, kernel shapes: docs/benchmarks.md measures it). With samples K > 1 the judgements are
sampled with seeds derived from the pair's content (egt.judge.api), so they are reproducible too.

Departure: the paper reads only sampled verdicts (and their entropies); reading the answer
distribution and averaging it over orders is egt's, for RL rewards that are not 0/1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from egt.core.calibration import pair_probability
from egt.core.errors import ConfigError, EgtError
from egt.core.records import PreferencePair
from egt.judge.api import Comparison, JudgeOptions, LocalBackend, build_backend, combine, content_key, orders_for
from egt.judge.endpoint import EndpointBackend
from egt.model.entropy import ScoredJudgement

VERDICT_DIGITS = ("1", "2")
UNCERTAINTY_METRICS = ("probability", "answer", "sentence", "mean", "max", "vote")
CALIBRATION_FORMAT = 1
# Log-odds are kept within +-50 (a probability within 2e-22 of 0 or 1): infinities would not survive JSON.
LOGIT_CAP = 50.0


# ---------------------------------------------------------------- reading the answer distribution

def verdict_token_ids(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ids of the tokens that write "1" / "2" alone (decoded text, stripped, is the digit)."""
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    ones = tuple(i for i, t in enumerate(texts) if t.strip() == VERDICT_DIGITS[0])
    twos = tuple(i for i, t in enumerate(texts) if t.strip() == VERDICT_DIGITS[1])
    if not ones or not twos:
        raise EgtError("the judge's tokenizer has no token that writes the verdict digit "
                       f"{VERDICT_DIGITS[0] if not ones else VERDICT_DIGITS[1]} alone: answer probabilities "
                       "cannot be read")
    return ones, twos


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _capped(z: float) -> float:
    return max(-LOGIT_CAP, min(LOGIT_CAP, z))


def two_way_logit(logits: Sequence[float], n_first: int) -> float:
    """log-odds of answer 1 over answer 2 from the digit tokens' raw logits (the first `n_first` write "1")."""
    first, second = _logsumexp(logits[:n_first]), _logsumexp(logits[n_first:])
    if first == second:  # both -inf included: no preference
        return 0.0
    return _capped(first - second)


def topk_two_way_logit(top_logprobs: Sequence[tuple[str, float]]) -> float | None:
    """log-odds of answer 1 over 2 from one step's top-k (token text, log-prob) entries (module docstring)."""
    if not top_logprobs:
        return None
    probs = [math.exp(lp) for _, lp in top_logprobs]
    mass = {d: sum(p for (t, _), p in zip(top_logprobs, probs) if t.strip() == d) for d in VERDICT_DIGITS}
    if not any(mass.values()):
        return None
    unlisted = max(0.0, 1.0 - sum(probs))
    bound = min(min(probs), unlisted) if unlisted > 0 else 0.0
    first, second = (mass[d] if mass[d] > 0 else bound for d in VERDICT_DIGITS)
    if first <= 0:
        return -LOGIT_CAP
    if second <= 0:
        return LOGIT_CAP
    return _capped(math.log(first) - math.log(second))


@dataclass
class ProbJudgement(ScoredJudgement):
    """A judgement with its answer log-odds (position 1 over 2; None: unreadable)."""

    answer_logit: float | None = None
    answer_forced: bool = False


# ---------------------------------------------------------------- backends

def _forced_prefix(tokenizer, token_ids: list[int], text: str, spans) -> list[int]:
    """Token ids of the judgement up to `</think>` (closed if missing), then `<answer>`."""
    cut = text.find("</think>")
    if cut < 0:
        return list(token_ids) + tokenizer("</think><answer>", add_special_tokens=False)["input_ids"]
    end = cut + len("</think>")
    keep = 0
    while keep < len(spans) and spans[keep][1] <= end:
        keep += 1
    kept_end = spans[keep - 1][1] if keep else 0
    return list(token_ids[:keep]) + tokenizer(text[kept_end:end] + "<answer>", add_special_tokens=False)["input_ids"]


class LocalProbabilityBackend(LocalBackend):
    """LocalBackend that also reads each judgement's answer log-odds (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ones, self.twos = verdict_token_ids(self.processor.tokenizer)
        self.watch = list(self.ones) + list(self.twos)

    def run(self, requests, *, temperature: float, top_p: float, max_new_tokens: int,
            on_batch: Callable[[int], None] | None = None) -> list[ProbJudgement]:
        from egt.model.entropy import response_entropies, token_layout
        from egt.model.generation import judge, next_token_logits
        from egt.model.spans import completion_spans

        tokenizer = self.processor.tokenizer
        judgements = judge(self.model, self.processor, requests, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, batch_size=self.batch_size, with_entropy=True,
                           progress=False, on_batch=on_batch, watch_token_ids=self.watch)
        out, forced = [], []
        for i, j in enumerate(judgements):
            spans = completion_spans(tokenizer, j.token_ids, j.text)
            layout = token_layout(j.text, spans)
            entropy = response_entropies(j.text, spans, j.token_entropies_nats, self.sentence_agg, layout)
            logit = None
            if layout.answer_token is not None:
                logit = two_way_logit(j.watched_logits[layout.answer_token], len(self.ones))
            else:
                forced.append((i, _forced_prefix(tokenizer, j.token_ids, j.text, spans)))
            out.append(ProbJudgement(j.text, j.verdict, len(j.token_ids), j.truncated, entropy,
                                     answer_logit=logit))
        if forced:
            logits = next_token_logits(self.model, self.processor, [requests[i].pair for i, _ in forced],
                                       [ids for _, ids in forced], self.watch, batch_size=self.batch_size)
            for (i, _), row in zip(forced, logits.tolist()):
                out[i].answer_logit = two_way_logit(row, len(self.ones))
                out[i].answer_forced = True
        return out


def endpoint_answer_logit(tokens: Sequence, text: str) -> float | None:
    """The verdict token's two-way log-odds from an OpenAI-style log-probs list (None without a verdict)."""
    from egt.core.prompts import parse_verdict
    from egt.model.spans import spans_from_token_bytes

    char = parse_verdict(text).verdict_char
    if char is None or not tokens:
        return None
    raw = [bytes(t.bytes) if getattr(t, "bytes", None) is not None else (t.token or "").encode("utf-8")
           for t in tokens]
    full, spans = spans_from_token_bytes(raw)
    if not full.startswith(text):
        return None
    for token, (start, end) in zip(tokens, spans):
        if start <= char < end:
            top = [(lp.token or "", float(lp.logprob)) for lp in (getattr(token, "top_logprobs", None) or [])]
            return topk_two_way_logit(top)
    return None


class EndpointProbabilityBackend(EndpointBackend):
    """EndpointBackend that also reads the verdict token's top log-probs (module docstring)."""

    def read_choice(self, response) -> ProbJudgement:
        scored = super().read_choice(response)
        logprobs = response.choices[0].logprobs
        tokens = list(getattr(logprobs, "content", None) or []) if logprobs is not None else []
        return ProbJudgement(scored.text, scored.verdict, scored.n_tokens, scored.truncated, scored.entropy,
                             scored.entropy_lower, answer_logit=endpoint_answer_logit(tokens, scored.text))

    def run(self, requests, *, temperature: float, top_p: float, max_new_tokens: int,
            on_batch: Callable[[int], None] | None = None) -> list[ProbJudgement]:
        if len(requests) == 1:  # the service's endpoint workers send one at a time: no pool per request
            result = [self.judge_one(requests[0], temperature, top_p, max_new_tokens)]
            if on_batch is not None:
                on_batch(1)
            return result
        return super().run(requests, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                           on_batch=on_batch)


# ---------------------------------------------------------------- calibration file

class Calibration(BaseModel):
    """What `egt calibrate` writes and `egt serve --calibration` loads (docs/serve.md)."""

    model_config = ConfigDict(extra="forbid")

    format: int = CALIBRATION_FORMAT
    temperature: float = Field(1.0, gt=0, description="divides every answer log-odds before the sigmoid")
    abstain_metric: Literal[UNCERTAINTY_METRICS] = "probability"  # type: ignore[valid-type]
    abstain_threshold: float | None = Field(None, description="abstain when the metric is above it; None: never")
    fitted: dict = Field(default_factory=dict, description="provenance and measurements (egt calibrate)")

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        from pydantic import ValidationError

        from egt.core.files import read_json

        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"calibration file {path}: cannot read it ({exc})") from None
        try:
            cal = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors())
            raise ConfigError(f"calibration file {path}: {problems}") from None
        if cal.format != CALIBRATION_FORMAT:
            raise ConfigError(f"calibration file {path}: format {cal.format}, this egt reads {CALIBRATION_FORMAT}")
        return cal


# ---------------------------------------------------------------- per pair

@dataclass
class PairReward:
    prob_1: float | None                      # P(response 1 better), both orders averaged; None: unreadable
    prob_by_order: dict[str, float | None]    # P(response 1 better) from each order alone
    verdict: int | None                       # 1 or 2 by prob_1; None at 0.5 or without a probability
    orders_agree: bool | None                 # each order alone prefers the same response (None: one order)
    abstain: bool
    uncertainty: float | None                 # the calibration's metric for this pair
    answer_forced: int                        # judgements whose answer was forced (no verdict written)
    comparison: Comparison = field(repr=False)

    @property
    def prob_2(self) -> float | None:
        return None if self.prob_1 is None else 1.0 - self.prob_1

    def to_dict(self, traces: bool = False) -> dict:
        c = self.comparison
        out = {"verdict": self.verdict, "prob": None if self.prob_1 is None else [self.prob_1, self.prob_2],
               "prob_by_order": self.prob_by_order, "orders_agree": self.orders_agree, "abstain": self.abstain,
               "uncertainty": self.uncertainty, "answer_forced": self.answer_forced,
               "vote_share": list(c.vote_share), "entropies": c.entropies, "entropy_kind": c.entropy_kind,
               "n_judgements": c.n_judgements}
        if c.entropies_lower is not None:
            out["entropies_lower"] = c.entropies_lower
        if traces:
            out["traces"] = [asdict(t) for t in c.traces]
        return out


def oriented_logits(orders: Sequence[str], judged: Sequence[Sequence[ProbJudgement]]) -> dict[str, list[float]]:
    """Per order, the answer log-odds of each judgement oriented to the caller's response 1."""
    return {order: [j.answer_logit if order == "given" else -j.answer_logit for j in group
                    if j.answer_logit is not None] for order, group in zip(orders, judged)}


def pair_reward(orders: Sequence[str], judged: Sequence[Sequence[ProbJudgement]], entropy_kind: str | None,
                calibration: Calibration | None = None) -> PairReward:
    """A pair's probabilities, verdict, agreement and abstention from its judgements (module docstring)."""
    cal = calibration or Calibration()
    comparison = combine(orders, judged, entropy_kind)
    by_order_z = oriented_logits(orders, judged)
    by_order = {o: (pair_probability(z, cal.temperature) if z else None) for o, z in by_order_z.items()}
    defined = [p for p in by_order.values() if p is not None]
    prob_1 = sum(defined) / len(defined) if defined else None
    verdict = None if prob_1 is None or prob_1 == 0.5 else (1 if prob_1 > 0.5 else 2)
    agree = None
    if len(orders) == 2 and len(defined) == 2:
        sides = [(p > 0.5) - (p < 0.5) for p in defined]
        agree = sides[0] == sides[1] != 0
    if cal.abstain_metric == "probability":
        uncertainty = None if prob_1 is None else 1.0 - max(prob_1, 1.0 - prob_1)
    else:
        uncertainty = comparison.entropies.get(cal.abstain_metric)
    abstain = prob_1 is None or len(defined) < len(orders) or (
        cal.abstain_threshold is not None and (uncertainty is None or uncertainty > cal.abstain_threshold))
    forced = sum(bool(j.answer_forced) for group in judged for j in group)
    return PairReward(prob_1, by_order, verdict, agree, bool(abstain), uncertainty, forced, comparison)


class RewardJudge:
    """A judge whose comparisons carry answer probabilities (module docstring); the service's model."""

    def __init__(self, backend, options: JudgeOptions, calibration: Calibration | None = None):
        self.backend, self.options = backend, options
        self.calibration = calibration or Calibration()
        self.orders = orders_for(options.orders)

    @classmethod
    def from_options(cls, options: JudgeOptions, calibration: Calibration | str | Path | None = None) -> "RewardJudge":
        if calibration is not None and not isinstance(calibration, Calibration):
            calibration = Calibration.load(calibration)
        backend = build_backend(options, LocalProbabilityBackend, EndpointProbabilityBackend)
        return cls(backend, options, calibration)

    @classmethod
    def from_pretrained(cls, path_or_endpoint: str | Path, calibration: Calibration | str | Path | None = None,
                        **options) -> "RewardJudge":
        from egt.core.config import load_config

        return cls.from_options(load_config(JudgeOptions, None, {"model": str(path_or_endpoint), **options}),
                                calibration)

    @property
    def entropy_kind(self) -> str | None:
        return getattr(self.backend, "entropy_kind", None)

    def requests_for(self, pair: PreferencePair, orders: Sequence[str] | None = None) -> list:
        """The judgements of one pair: `samples` per order, in order; seeded by content when sampled."""
        from egt.model.generation import JudgeRequest, judgement_seed

        k = self.options.samples
        out = []
        for order in orders or self.orders:
            view = pair.in_order(order)
            key = content_key(view)
            out += [JudgeRequest(view, None if k == 1 else judgement_seed(self.options.seed, key, s)) for s in range(k)]
        return out

    def run(self, requests: Sequence) -> list[ProbJudgement]:
        """Judge oriented requests (one backend call; the service's batches come here)."""
        return self.backend.run(list(requests), temperature=self.options.temperature, top_p=self.options.top_p,
                                max_new_tokens=self.options.max_new_tokens)

    def reward(self, judged: Sequence[ProbJudgement], orders: Sequence[str] | None = None) -> PairReward:
        """One pair's PairReward from its judgements, as `requests_for` ordered them."""
        orders = list(orders or self.orders)
        k = self.options.samples
        return pair_reward(orders, [list(judged[o * k:(o + 1) * k]) for o in range(len(orders))],
                           self.entropy_kind, self.calibration)

    def score(self, pairs: Sequence[PreferencePair], orders: Sequence[str] | None = None) -> list[PairReward]:
        """PairRewards of many pairs (batched by the backend's batch_size), in input order."""
        orders = list(orders or self.orders)
        requests = [r for p in pairs for r in self.requests_for(p, orders)]
        judged = self.run(requests) if requests else []
        n = self.options.samples * len(orders)
        return [self.reward(judged[i * n:(i + 1) * n], orders) for i in range(len(pairs))]

