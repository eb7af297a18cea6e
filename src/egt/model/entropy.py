"""Entropy of a judge's own token distributions, and the per-response / per-pair scores of EGT.

Pure functions, no I/O. The definitions, for users, are in docs/definitions.md ("Entropies"):

- `token_entropy(logits, temperature)`: H_t = -sum_v p_t(v) log p_t(v) over the FULL vocabulary,
  in nats, computed chunk by chunk over positions in fp32 (fp64 for fp64 input), so a
  [4096 x 152k] bf16 block never exists in fp32 at once (see benchmarks/bench_entropy.py).
- `topk_entropy_bounds`: bounds on H when an engine (vLLM) returns only the top-k log-probs.
- Which characters of the completion each token wrote is egt.model.spans' work.
- `token_layout`: the answer token, the <think> region and the sentence of each token of one judgement.
- `response_entropies`: answer-token, sentence, mean-token and max-token entropy of one judgement
  (`judgement_entropies`: the same for a generated `egt.model.generation.Judgement`; `ScoredJudgement`: a
  judgement with them, as egt.judge.api's backends return it).
- `pair_entropies`: the K-sample means, vote entropy and K-sample accuracy of one pair, under the
  score-file column names of egt.core.score_columns (which also combines metrics into the hybrid score).

Choices made where the paper is silent (documented here and in docs/definitions.md):
- A row whose logits are all -inf has entropy 0 (no outcome is possible, nothing is uncertain).
  +inf or NaN logits give NaN.
- Sentence and max-token entropy use the tokens inside `<think>...</think>`; when a response has
  no closed think block they use all tokens.
- A token belongs to the sentence that contains its first character; sentences split after
  `.`, `!` or `?` followed by whitespace (or the end), and at newlines (`split_sentences`).
- Vote entropy counts "no verdict" (None or 0) as an outcome of its own.

Run the tests with `pytest tests/model/test_entropy.py`; the memory benchmark with
`python benchmarks/bench_entropy.py`.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from egt.core.prompts import parse_verdict
from egt.core.score_columns import METRIC_COLUMNS
from egt.model.spans import completion_spans

# fp32 working memory of one chunk in token_entropy: two [rows, vocab] buffers.
DEFAULT_CHUNK_WORKSPACE_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------- token entropy

def default_chunk_size(vocab_size: int, workspace_bytes: int = DEFAULT_CHUNK_WORKSPACE_BYTES,
                       itemsize: int = 4) -> int:
    """Rows per chunk so that the two working buffers of a chunk fit in `workspace_bytes`."""
    return max(1, workspace_bytes // (2 * itemsize * max(1, vocab_size)))


def _entropy_rows(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of the scaled logits `z` [rows, vocab]; `z` and `e` are scratch.

    H = log Z - sum_v e_v s_v / Z with s = z - max z, e = exp(s), Z = sum e. Writing
    Z = 1 + rest (rest excludes the argmax) and log Z = log1p(rest) keeps peaked rows exact
    (H ~ 1e-8 nats) where log(Z) in fp32 would round to 0.
    """
    max_z, argmax = z.max(dim=-1, keepdim=True)
    max_z = max_z.masked_fill(max_z == float("-inf"), 0.0)  # all -inf row: H = 0, not NaN
    z.sub_(max_z)
    torch.exp(z, out=e)
    e.scatter_(-1, argmax, 0.0)
    rest = e.sum(dim=-1)
    z.clamp_(min=-torch.finfo(z.dtype).max)  # -inf -> finite, so 0 * s = 0 and never NaN
    weighted = e.mul_(z).sum(dim=-1)
    return torch.log1p(rest) - weighted / (1.0 + rest)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0,
                  chunk_size: int | None = None) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) over the last axis.

    Returns a tensor of shape `logits.shape[:-1]` (fp32; fp64 for fp64 input) on the same device.
    fp16/bf16 logits are upcast one chunk of `chunk_size` positions at a time (default: the
    chunk's fp32 workspace stays under 256 MiB). -inf logits contribute 0; an all -inf row is 0.
    """
    if not torch.is_tensor(logits):
        logits = torch.as_tensor(logits)
    if not logits.is_floating_point():
        raise ValueError(f"token_entropy needs floating-point logits, got {logits.dtype}")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"token_entropy needs logits with a non-empty last (vocabulary) axis, got shape {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab_size = logits.shape[-1]
    work_dtype = torch.promote_types(logits.dtype, torch.float32)
    rows = default_chunk_size(vocab_size, itemsize=torch.finfo(work_dtype).bits // 8) \
        if chunk_size is None else int(chunk_size)
    if rows < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    try:
        flat = logits.unsqueeze(0) if logits.dim() == 1 else logits.view(-1, vocab_size)
    except RuntimeError:
        # A strided slice (e.g. logits[:, :-1]) cannot be flattened without copying the whole
        # block; go one leading index at a time instead.
        return torch.stack([token_entropy(part, temperature, rows) for part in logits.unbind(0)]) \
            if logits.shape[0] else torch.empty(logits.shape[:-1], dtype=work_dtype, device=logits.device)
    out = torch.empty(flat.shape[0], dtype=work_dtype, device=logits.device)
    # Two scratch buffers reused by every chunk: the input is never written, and on CPU
    # fresh allocations per chunk would cost a page fault per 4 KiB.
    scratch_rows = min(rows, flat.shape[0])
    z_buf = torch.empty(scratch_rows, vocab_size, dtype=work_dtype, device=logits.device)
    e_buf = torch.empty_like(z_buf)
    with torch.no_grad():
        for start in range(0, flat.shape[0], rows):
            chunk = flat[start:start + rows]
            z, e = z_buf[:chunk.shape[0]], e_buf[:chunk.shape[0]]
            z.copy_(chunk)
            if temperature != 1.0:
                z.div_(temperature)
            out[start:start + rows] = _entropy_rows(z, e)
    return out.reshape(logits.shape[:-1])


def topk_entropy_bounds(topk_logprobs, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (nats) on the full-vocabulary entropy from top-k log-probs.

    `topk_logprobs` [..., k] are the (unrenormalised) log-probabilities of the k most likely
    tokens. With H_k = -sum_i p_i log p_i over the kept tokens, r = 1 - sum_i p_i the missing
    mass and p_k the smallest kept probability:

        H_k + r log(1/p_k)  <=  H  <=  H_k + r log((V - k) / r)

    The lower bound holds because every missing token has probability <= p_k; the upper bound
    spreads r evenly over the V - k missing tokens. r is clamped to >= 0; r = 0 gives H_k twice.
    The renormalised top-k entropy is NOT the entropy and is never returned. Computed in fp64.
    """
    logp = torch.as_tensor(topk_logprobs, dtype=torch.float64)
    if logp.dim() == 0:
        raise ValueError("topk_logprobs needs a last axis of k log-probabilities")
    k = logp.shape[-1]
    if k > vocab_size:
        raise ValueError(f"k = {k} top log-probs exceed vocab_size = {vocab_size}")
    p = torch.exp(logp)
    kept_entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    smallest = p.min(dim=-1).values if k else torch.ones(logp.shape[:-1], dtype=torch.float64)
    missing = (1.0 - p.sum(dim=-1)).clamp(min=0.0)
    # Rounding noise in r when the top-k already hold everything (k = V, or a kept p = 0).
    missing = torch.where((smallest > 0) & (vocab_size > k), missing, torch.zeros_like(missing))
    lower = kept_entropy - torch.special.xlogy(missing, smallest.clamp(min=torch.finfo(torch.float64).tiny))
    upper = kept_entropy + torch.special.xlogy(missing, torch.full_like(missing, float(max(vocab_size - k, 1)))) \
        - torch.special.xlogy(missing, missing)
    return lower, torch.maximum(upper, lower)


# ----------------------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)\s*|\n\s*")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Char spans of the sentences of `text`; the spans tile the text (whitespace included).

    A sentence ends after a run of `.`, `!` or `?` followed by whitespace or the end of the
    text, or at a newline; the whitespace after the end belongs to the sentence. Deliberately
    simple: "e.g. this" splits, "3.5" does not. Whitespace-only text has no sentences.
    """
    if not text.strip():
        return []
    bounds = [m.end() for m in _SENTENCE_END.finditer(text)]
    spans, prev = [], 0
    for end in bounds + [len(text)]:
        if end <= prev:
            continue
        if text[prev:end].strip():
            spans.append((prev, end))
        elif spans:  # whitespace only: glue to the previous sentence
            spans[-1] = (spans[-1][0], end)
        else:
            continue  # leading whitespace: goes to the first sentence below
        prev = end
    if spans and spans[0][0] != 0:
        spans[0] = (0, spans[0][1])
    return spans


# ----------------------------------------------------------------------------- per response

@dataclass(frozen=True)
class ResponseEntropy:
    verdict: int | None            # 1, 2, or None when parse_verdict reads none
    answer_nats: float | None      # H of the token that writes the verdict digit; None = flagged
    sentence_nats: float           # mean (or max) over <think> sentences of their mean H_t; NaN if none
    mean_token_nats: float         # mean H_t over all tokens; NaN if no tokens
    max_token_nats: float          # max H_t over <think> tokens (all tokens without a think block)
    n_tokens: int


@dataclass(frozen=True)
class TokenLayout:
    """Where each token of one judgement sits, as the entropies of docs/definitions.md read it.

    `answer_token`: the token whose span covers the verdict digit (None without a verdict).
    `region`: the tokens inside `<think>...</think>` (all tokens without a closed think block),
    i.e. those whose first character lies in that text; they are contiguous.
    `sentences[i]`: the sentence (0, 1, ...) of that text holding token i's first character;
    -1 for tokens outside the region, and for every token when the text has no sentence.
    """

    verdict: int | None
    answer_token: int | None
    region: tuple[int, ...]
    sentences: tuple[int, ...]


_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def _token_start_in(span: tuple[int, int], lo: int, hi: int) -> int | None:
    """The first char of `span` inside [lo, hi), or None when the span has none there."""
    start, end = span
    if start == end:
        return start if lo <= start < hi else None
    first = max(start, lo)
    return first if first < min(end, hi) else None


def token_layout(text: str, token_spans: Sequence[tuple[int, int]]) -> TokenLayout:
    """Answer token, <think> region and sentence of every token of one judgement (see TokenLayout).

    `token_spans[i]` is the char span in `text` of token i (egt.model.spans). The viewer
    (egt.reporting.view) shows exactly this layout, so what it marks is what the scores were computed on.
    """
    verdict = parse_verdict(text)
    answer = None
    if verdict.verdict_char is not None:
        for i, (start, end) in enumerate(token_spans):
            if start <= verdict.verdict_char < end:
                answer = i
                break

    think = _THINK.search(text)
    lo, hi = (think.start(1), think.end(1)) if think else (0, len(text))
    region = {i: first for i, span in enumerate(token_spans)
              if (first := _token_start_in(tuple(span), lo, hi)) is not None}
    sentences = [-1] * len(token_spans)
    if region:
        sentence_starts = [lo + start for start, _ in split_sentences(text[lo:hi])]
        if sentence_starts:  # whitespace-only think text has no sentences
            for i, first in region.items():
                sentences[i] = max(bisect.bisect_right(sentence_starts, first) - 1, 0)
    return TokenLayout(verdict.verdict, answer, tuple(region), tuple(sentences))


def response_entropies(text: str, token_spans: Sequence[tuple[int, int]],
                       token_entropies_nats: Sequence[float], sentence_agg: str = "mean",
                       layout: TokenLayout | None = None) -> ResponseEntropy:
    """Answer-token, sentence, mean-token and max-token entropy of one judgement.

    `token_spans[i]` is the char span in `text` of token i (egt.model.spans) and
    `token_entropies_nats[i]` its H_t. The answer token is the one whose span covers
    `parse_verdict(text).verdict_char`; sentences and the <think> region are `token_layout`'s
    (pass `layout` when it is already computed).
    """
    if sentence_agg not in ("mean", "max"):
        raise ValueError(f"sentence_agg must be 'mean' or 'max', got {sentence_agg!r}")
    entropies = np.asarray(token_entropies_nats, dtype=np.float64).reshape(-1)
    if len(token_spans) != len(entropies):
        raise ValueError(f"{len(token_spans)} token spans but {len(entropies)} token entropies")
    if layout is None:
        layout = token_layout(text, token_spans)
    answer_nats = float(entropies[layout.answer_token]) if layout.answer_token is not None else None

    members: dict[int, list[float]] = {}
    for i in layout.region:
        if layout.sentences[i] >= 0:
            members.setdefault(layout.sentences[i], []).append(entropies[i])
    sentence_values = [float(np.mean(members[j])) for j in sorted(members)]
    if sentence_values:
        sentence_nats = float(np.mean(sentence_values) if sentence_agg == "mean" else np.max(sentence_values))
    else:
        sentence_nats = math.nan

    return ResponseEntropy(
        verdict=layout.verdict,
        answer_nats=answer_nats,
        sentence_nats=sentence_nats,
        mean_token_nats=float(entropies.mean()) if len(entropies) else math.nan,
        max_token_nats=float(entropies[list(layout.region)].max()) if layout.region else math.nan,
        n_tokens=int(len(entropies)),
    )


@dataclass
class ScoredJudgement:
    """A judgement with its per-response entropies, as the judge backends (egt.judge.api) return it."""

    text: str
    verdict: object                               # egt.core.prompts.Verdict
    n_tokens: int
    truncated: bool = False
    entropy: ResponseEntropy | None = None        # exact, or the upper bounds (endpoint); None = unavailable
    entropy_lower: ResponseEntropy | None = None  # the lower bounds (endpoint top-k log-probs), else None


def as_scored(judgement) -> ScoredJudgement:
    """An egt.model.generation.Judgement (no per-response entropies) as a ScoredJudgement; ScoredJudgements pass."""
    if isinstance(judgement, ScoredJudgement):
        return judgement
    return ScoredJudgement(judgement.text, judgement.verdict, len(judgement.token_ids), bool(judgement.truncated))


def judgement_entropies(judgement, tokenizer, sentence_agg: str = "mean",
                        entropies: Sequence[float] | None = None) -> tuple[ResponseEntropy, list[tuple[int, int]]]:
    """Per-response entropies of one generated judgement (egt.model.generation.Judgement) and its token spans.

    `entropies` replaces `judgement.token_entropies_nats` (e.g. the lower bounds of top-k mode).
    """
    spans = completion_spans(tokenizer, judgement.token_ids, judgement.text)
    values = judgement.token_entropies_nats if entropies is None else entropies
    return response_entropies(judgement.text, spans, values, sentence_agg), spans


# ----------------------------------------------------------------------------- per pair

def vote_entropy(verdicts: Sequence[int | None]) -> float:
    """Entropy (nats) of the empirical distribution of K verdicts; None/0 is its own outcome.

    [1, 1, 2, 2] -> ln 2; [1, 1, 1] -> 0; [] -> NaN.
    """
    if not len(verdicts):
        return math.nan
    counts = Counter(v or 0 for v in verdicts)
    total = len(verdicts)
    return float(-sum((c / total) * math.log(c / total) for c in counts.values()))


def _mean_defined(values) -> float:
    defined = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def pair_entropies(responses: Sequence[ResponseEntropy], label: int) -> dict:
    """Score columns of one pair from its K judgements (docs/definitions.md, "Score file")."""
    verdicts = [r.verdict or 0 for r in responses]
    counts = Counter(v for v in verdicts if v)
    top = counts.most_common()
    majority = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else 0
    return {
        "verdicts": verdicts,
        "k_accuracy": float(np.mean([v == label for v in verdicts])) if verdicts else math.nan,
        "majority_verdict": int(majority),
        "parse_failures": sum(r.verdict is None for r in responses),
        METRIC_COLUMNS["answer"]: _mean_defined(r.answer_nats for r in responses),
        "answer_entropy_missing": sum(r.answer_nats is None for r in responses),
        METRIC_COLUMNS["sentence"]: _mean_defined(r.sentence_nats for r in responses),
        METRIC_COLUMNS["mean"]: _mean_defined(r.mean_token_nats for r in responses),
        METRIC_COLUMNS["max"]: _mean_defined(r.max_token_nats for r in responses),
        METRIC_COLUMNS["vote"]: vote_entropy(verdicts),
        "n_tokens_mean": float(np.mean([r.n_tokens for r in responses])) if responses else math.nan,
    }
