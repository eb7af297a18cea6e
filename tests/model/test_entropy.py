"""Tests of egt.model.entropy against float64 references and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assert_tiles

from egt.model.entropy import (
    ResponseEntropy,
    default_chunk_size,
    pair_entropies,
    response_entropies,
    split_sentences,
    token_entropy,
    token_layout,
    topk_entropy_bounds,
    vote_entropy,
)

NEG_INF = float("-inf")


def reference_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum p log p in float64 from the same (already rounded) logits."""
    z = logits.double() / temperature
    p = torch.softmax(z, dim=-1)
    h = -torch.special.xlogy(p, p).sum(dim=-1)
    return torch.nan_to_num(h, nan=0.0)  # all -inf rows: softmax is NaN there; defined as 0


def random_logits(shape, dtype, seed, scale=4.0, masked_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(shape, generator=g) < masked_fraction
    x = x.masked_fill(mask, NEG_INF)
    return x.to(dtype)


# ----------------------------------------------------------------------------- token_entropy

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(257,), (9, 1000), (3, 5, 640)])
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_token_entropy_matches_float64_reference(dtype, temperature, shape, chunk_size):
    logits = random_logits(shape, dtype, seed=hash((str(dtype), temperature, shape)) % 2**31)
    got = token_entropy(logits, temperature=temperature, chunk_size=chunk_size)
    want = reference_entropy(logits, temperature)
    assert got.shape == logits.shape[:-1]
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_token_entropy_qwen_vocab(dtype):
    # 152k terms per row: the fp32 sum must still hold 1e-5 relative (a naive fp32 softmax does not always).
    logits = random_logits((6, 151936), dtype, seed=3, scale=3.0, masked_fraction=0.05)
    got = token_entropy(logits, chunk_size=4)
    torch.testing.assert_close(got.double(), reference_entropy(logits, 1.0), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_entropy_peaked_and_flat_rows(dtype):
    vocab = 5000
    peaked = torch.full((vocab,), -30.0)
    peaked[7] = 0.0           # H ~ 1.5e-9 * 30 nats: log(Z) in fp32 would give 0
    peaked2 = torch.randn(vocab) - 12.0
    peaked2[0] = 8.0          # answer-token-like: H ~ 1e-3 nats
    flat = torch.zeros(vocab)  # H = ln V exactly
    logits = torch.stack([peaked, peaked2, flat]).to(dtype)
    got = token_entropy(logits)
    torch.testing.assert_close(got.double(), reference_entropy(logits, 1.0), rtol=1e-5, atol=0.0)
    assert got[2].item() == pytest.approx(math.log(vocab), rel=1e-6)


def test_token_entropy_inf_rows_and_single_token():
    logits = torch.tensor([[NEG_INF, NEG_INF, NEG_INF],   # nothing possible: defined 0
                           [NEG_INF, 3.0, NEG_INF],        # one token: 0
                           [0.0, 0.0, NEG_INF],            # two equal: ln 2
                           [float("inf"), 0.0, 0.0]])      # invalid input: NaN, not a number
    got = token_entropy(logits, chunk_size=2)
    assert got[0].item() == 0.0
    assert got[1].item() == 0.0
    assert got[2].item() == pytest.approx(math.log(2), rel=1e-7)
    assert math.isnan(got[3].item())


def test_token_entropy_strided_slice_and_zero_chunk():
    logits = random_logits((3, 6, 300), torch.bfloat16, seed=5)
    sliced = logits[:, :-1]                       # not viewable as [-1, V]
    got = token_entropy(sliced, chunk_size=2)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got.double(), reference_entropy(sliced, 1.0), rtol=1e-5, atol=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(logits, chunk_size=0)


def test_token_entropy_does_not_touch_input_and_keeps_fp64():
    logits = torch.randn(4, 50)
    before = logits.clone()
    token_entropy(logits, temperature=0.7)
    assert torch.equal(logits, before)
    got = token_entropy(logits.double(), temperature=0.7)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, reference_entropy(logits.double(), 0.7), rtol=1e-12, atol=0.0)


def test_token_entropy_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="floating-point"):
        token_entropy(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        token_entropy(torch.zeros(2, 0))
    assert token_entropy(torch.zeros(0, 5)).shape == (0,)


def test_default_chunk_is_a_few_hundred_mb_for_qwen_vocab():
    rows = default_chunk_size(151936)
    assert 100 <= rows <= 400
    assert 2 * 4 * rows * 151936 <= 256 * 2**20


# ----------------------------------------------------------------------------- top-k bounds

@pytest.mark.parametrize("scale", [0.3, 2.0, 8.0])     # flat ... peaked
@pytest.mark.parametrize("k", [1, 5, 20, 199, 200])
def test_topk_bounds_contain_exact_entropy(scale, k):
    vocab = 200
    g = torch.Generator().manual_seed(k * 31 + int(scale * 10))
    logits = torch.randn(64, vocab, generator=g, dtype=torch.float64) * scale
    logp = torch.log_softmax(logits, dim=-1)
    exact = reference_entropy(logits, 1.0)
    topk = logp.topk(k, dim=-1).values
    lower, upper = topk_entropy_bounds(topk, vocab)
    assert lower.shape == upper.shape == (64,)
    assert (lower <= exact + 1e-9).all()
    assert (exact <= upper + 1e-9).all()
    if k == vocab:
        torch.testing.assert_close(lower, exact)
        torch.testing.assert_close(upper, exact)


def test_topk_bounds_by_hand():
    # p = (0.5, 0.25 | 0.125, 0.125) with V = 4, k = 2: r = 0.25, p_k = 0.25.
    lower, upper = topk_entropy_bounds(torch.log(torch.tensor([0.5, 0.25])), 4)
    kept = 0.5 * math.log(2) + 0.25 * math.log(4)
    assert lower.item() == pytest.approx(kept + 0.25 * math.log(4))
    assert upper.item() == pytest.approx(kept + 0.25 * math.log(2 / 0.25))
    # Here the missing tokens share r evenly, so the upper bound is the exact entropy.
    assert upper.item() == pytest.approx(1.75 * math.log(2))  # 0.5 ln2 + 0.25 ln4 + 2 * 0.125 ln8
    # Nothing missing: both bounds are H_k.
    lower, upper = topk_entropy_bounds([math.log(0.5), math.log(0.5)], 10)
    assert lower.item() == pytest.approx(math.log(2)) and upper.item() == pytest.approx(math.log(2))


# ----------------------------------------------------------------------------- sentences

def test_split_sentences_by_hand():
    text = "  First one. Second is 3.5 long!\n\nThird?Still third\nlast"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["  First one. ", "Second is 3.5 long!\n\n",
                                             "Third?Still third\n", "last"]
    assert_tiles(spans, text)
    assert split_sentences("   \n ") == []
    assert split_sentences("no end") == [(0, 6)]


# ----------------------------------------------------------------------------- per response

def test_response_entropies_hand_computed():
    # Tokens: "<think>" | "A b." | " C d." | " E" | "</think>" | "<answer>" | "2" | "</answer>"
    text = "<think>A b. C d. E</think><answer>2</answer>"
    pieces = ["<think>", "A b.", " C d.", " E", "</think>", "<answer>", "2", "</answer>"]
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    assert pos == len(text)
    h = [0.1, 1.0, 2.0, 4.0, 0.2, 0.3, 0.05, 0.4]
    r = response_entropies(text, spans, h)
    assert r.verdict == 2
    assert r.answer_nats == pytest.approx(0.05)
    # Sentences of the think text: "A b. " | "C d. " | "E"; " C d." starts in the first sentence
    # (its leading space), " E" starts in the second one.
    assert r.sentence_nats == pytest.approx(np.mean([(1.0 + 2.0) / 2, 4.0]))
    assert r.mean_token_nats == pytest.approx(np.mean(h))
    assert r.max_token_nats == pytest.approx(4.0)
    assert r.n_tokens == 8
    r_max = response_entropies(text, spans, h, sentence_agg="max")
    assert r_max.sentence_nats == pytest.approx(4.0)


def test_response_entropies_three_tokens_sentence_split():
    text = "<think>Yes. No.</think><answer>1</answer>"
    # 3 coarse tokens: "<think>Yes." | " No.</think><answer>" | "1</answer>"
    spans = [(0, 11), (11, 31), (31, len(text))]
    r = response_entropies(text, spans, [0.5, 1.5, 0.01])
    assert r.verdict == 1 and r.answer_nats == pytest.approx(0.01)
    # Token 0 starts (inside think) at "Y" -> sentence "Yes. "; token 1 at " " -> also "Yes. ".
    assert r.sentence_nats == pytest.approx(1.0)
    assert r.max_token_nats == pytest.approx(1.5)
    assert r.mean_token_nats == pytest.approx((0.5 + 1.5 + 0.01) / 3)


def test_response_entropies_without_verdict_or_think():
    text = "I cannot decide. Both fine."
    spans = [(0, 8), (8, 17), (17, 27)]
    r = response_entropies(text, spans, [1.0, 3.0, 2.0])
    assert r.verdict is None and r.answer_nats is None
    assert r.max_token_nats == 3.0                            # all tokens without a think block
    assert r.sentence_nats == pytest.approx((2.0 + 2.0) / 2)  # "I cannot decide. " | "Both fine."
    empty = response_entropies("", [], [])
    assert empty.n_tokens == 0 and math.isnan(empty.mean_token_nats)
    assert math.isnan(empty.sentence_nats) and math.isnan(empty.max_token_nats)
    with pytest.raises(ValueError, match="spans"):
        response_entropies(text, spans, [1.0])


def _tile(pieces):
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return "".join(pieces), spans


def test_token_layout_answer_region_and_sentences():
    text, spans = _tile(["<think>", "A b.", " C d.", " E", "</think>", "<answer>", "2", "</answer>"])
    layout = token_layout(text, spans)
    assert layout.verdict == 2 and layout.answer_token == 6
    # "<think>" ends where the think text starts, so it is outside; " C d." starts in sentence 0 (its space).
    assert layout.region == (1, 2, 3)
    assert layout.sentences == (-1, 0, 0, 1, -1, -1, -1, -1)
    no_think, spans = _tile(["I cannot", " decide.", " Both fine."])
    assert token_layout(no_think, spans).region == (0, 1, 2)
    assert token_layout(no_think, spans).sentences == (0, 0, 0)  # " Both" starts with the space of sentence 0
    assert token_layout(no_think, spans).answer_token is None


def test_whitespace_only_think_has_no_sentences():
    # Used to raise IndexError: tokens inside the think block but no sentence to put them in.
    text, spans = _tile(["<think>", " ", "</think>", "<answer>", "1", "</answer>"])
    layout = token_layout(text, spans)
    assert layout.region == (1,) and layout.sentences == (-1,) * 6
    r = response_entropies(text, spans, [0.1, 0.7, 0.2, 0.3, 0.05, 0.4])
    assert math.isnan(r.sentence_nats) and r.max_token_nats == pytest.approx(0.7)
    assert r.answer_nats == pytest.approx(0.05) and r.verdict == 1


# ----------------------------------------------------------------------------- per pair

def test_vote_entropy():
    assert vote_entropy([1, 1, 2, 2]) == pytest.approx(math.log(2))
    assert vote_entropy([1, 1, 1]) == 0.0
    assert vote_entropy([1, 2, None, 0]) == pytest.approx(-(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5)))
    assert vote_entropy([1, 2, None]) == pytest.approx(math.log(3))
    assert math.isnan(vote_entropy([]))


def _resp(verdict, answer, sentence=1.0, mean=0.5, maxi=2.0, n=10):
    return ResponseEntropy(verdict, answer, sentence, mean, maxi, n)


def test_pair_entropies_hand_computed():
    responses = [_resp(1, 0.2, 1.0, 0.5, 2.0, 10), _resp(1, 0.4, 3.0, 0.7, 4.0, 20),
                 _resp(2, 0.6, math.nan, 0.9, math.nan, 30), _resp(None, None, 2.0, 1.1, 3.0, 40)]
    row = pair_entropies(responses, label=1)
    assert set(row) == {"verdicts", "k_accuracy", "majority_verdict", "parse_failures", "answer_entropy_nats",
                        "answer_entropy_missing", "sentence_entropy_nats", "mean_token_entropy_nats",
                        "max_token_entropy_nats", "vote_entropy_nats", "n_tokens_mean"}
    assert row["verdicts"] == [1, 1, 2, 0]
    assert row["k_accuracy"] == 0.5
    assert row["majority_verdict"] == 1
    assert row["parse_failures"] == 1
    assert row["answer_entropy_nats"] == pytest.approx(0.4)
    assert row["answer_entropy_missing"] == 1
    assert row["sentence_entropy_nats"] == pytest.approx(2.0)
    assert row["mean_token_entropy_nats"] == pytest.approx(0.8)
    assert row["max_token_entropy_nats"] == pytest.approx(3.0)
    assert row["vote_entropy_nats"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert row["n_tokens_mean"] == 25.0


def test_pair_entropies_ties_and_no_verdicts():
    tie = pair_entropies([_resp(1, 0.1), _resp(2, 0.1)], label=2)
    assert tie["majority_verdict"] == 0 and tie["k_accuracy"] == 0.5
    assert tie["vote_entropy_nats"] == pytest.approx(math.log(2))
    none = pair_entropies([_resp(None, None), _resp(None, None)], label=1)
    assert none["majority_verdict"] == 0 and none["k_accuracy"] == 0.0
    assert math.isnan(none["answer_entropy_nats"]) and none["answer_entropy_missing"] == 2
    assert none["vote_entropy_nats"] == 0.0
