"""Tests of egt.model.spans: token -> character spans on real tokenizers (byte-level BPE, SentencePiece-style,
the tiny judge's), and the answer token they locate for egt.model.entropy."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_tiles

from egt.core.prompts import format_judgement, parse_verdict
from egt.model.entropy import response_entropies
from egt.model.spans import spans_from_token_bytes, token_char_spans

CORPUS = [
    "<think>Response 1 says the cat is red. Response 2 says blue!</think><answer>2</answer>",
    "Crème brûlée, naïve café — 東京 と 大阪. Ελληνικά? 🙂 emoji 🐈 too.",
    "The image shows 3.5 apples\nand a dog. Is it right? Yes.",
]


@pytest.fixture(scope="module")
def byte_bpe_tokenizer():
    """A real byte-level BPE tokenizer, trained here, with the judge tags as added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(CORPUS * 5, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False)
    fast.add_tokens(["<think>", "</think>", "<answer>", "</answer>"])
    return fast


@pytest.mark.parametrize("text", CORPUS + ["Unseen: ünïcödé ✓ 日本語 𝔘 text."])
def test_token_char_spans_tile_decoded_text(byte_bpe_tokenizer, text):
    ids = byte_bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded = byte_bpe_tokenizer.decode(ids)
    assert decoded == text
    spans = token_char_spans(byte_bpe_tokenizer, ids)
    assert len(spans) == len(ids)
    assert_tiles(spans, decoded)
    # A non-empty span is what its token decodes to, together with the empty-span tokens
    # just before it (the leading bytes of a multi-byte character).
    for i, (s, e) in enumerate(spans):
        if s < e:
            first = i
            while first > 0 and spans[first - 1] == (s, s):
                first -= 1
            assert byte_bpe_tokenizer.decode(ids[first:i + 1]) == decoded[s:e]


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """SentencePiece-style (Metaspace): decoding from mid-text drops a leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback()])
    alphabet = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(CORPUS * 5, trainer=trainers.BpeTrainer(vocab_size=600, special_tokens=alphabet))
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("which", ["byte_bpe_tokenizer", "metaspace_tokenizer"])
def test_token_char_spans_blockwise_equals_all_prefixes(request, which):
    from egt.model.spans import _spans_from_ends, _token_ends

    tokenizer = request.getfixturevalue(which)
    text = " ".join(CORPUS * 3) + " Unseen: ünïcödé ✓ 日本語 𝔘 text."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = tokenizer.decode(ids)
    kwargs = {"skip_special_tokens": False}
    exact = _spans_from_ends(_token_ends(tokenizer, ids, full, kwargs, block=len(ids) + 1))  # all prefixes
    for block, context in [(1, 1), (4, 2), (7, 3), (64, 8)]:
        assert _spans_from_ends(_token_ends(tokenizer, ids, full, kwargs, block=block, context=context)) == exact
    spans = token_char_spans(tokenizer, ids)
    assert_tiles(spans, full)


def test_token_char_spans_partial_utf8_goes_to_completing_token(byte_bpe_tokenizer):
    text = "a 🙂 b"
    # One token per byte (the byte-level alphabet), so the 4-byte emoji spans 4 tokens.
    words = byte_bpe_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    byte_tokens = [byte_bpe_tokenizer.convert_tokens_to_ids(char) for word, _ in words for char in word]
    assert len(byte_tokens) == len(text.encode("utf-8"))
    spans = token_char_spans(byte_bpe_tokenizer, byte_tokens)
    assert byte_bpe_tokenizer.decode(byte_tokens) == text
    assert_tiles(spans, text)
    emoji = text.index("🙂")
    assert spans[2:6] == [(emoji, emoji), (emoji, emoji), (emoji, emoji), (emoji, emoji + 1)]


def test_spans_from_token_bytes_match_token_char_spans(byte_bpe_tokenizer):
    """The same spans from raw token bytes (an endpoint's log-probs) as from decoding prefixes."""
    text = "a 🙂 b"
    emoji = "🙂".encode("utf-8")
    pieces = [b"a", b" ", emoji[:1], emoji[1:2], emoji[2:3], emoji[3:], b" b"]
    decoded, spans = spans_from_token_bytes(pieces)
    assert decoded == text
    assert spans == [(0, 1), (1, 2), (2, 2), (2, 2), (2, 2), (2, 3), (3, 5)]
    words = byte_bpe_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    byte_tokens = [byte_bpe_tokenizer.convert_tokens_to_ids(char) for word, _ in words for char in word]
    assert token_char_spans(byte_bpe_tokenizer, byte_tokens)[2:6] == spans[2:6]
    # an incomplete character at the very end is replaced, and belongs to the last token
    assert spans_from_token_bytes([b"ok", emoji[:2]]) == ("ok\ufffd", [(0, 2), (2, 3)])
    assert spans_from_token_bytes([]) == ("", [])


def test_byte_level_spans_equal_the_prefix_method(byte_bpe_tokenizer, metaspace_tokenizer):
    """The one-pass spans of a byte-level tokenizer (what scoring uses) equal decoding every prefix."""
    import random

    from egt.model.spans import byte_level_spans, span_tokenizer

    raw = span_tokenizer(byte_bpe_tokenizer)
    assert raw is not byte_bpe_tokenizer
    rng = random.Random(0)
    texts = CORPUS + ["<think>Unseen: ünïcödé ✓ 日本語 𝔘 text.</think><answer>2</answer>", "a 🙂 b"]
    sequences = [byte_bpe_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    sequences += [[rng.randrange(len(byte_bpe_tokenizer)) for _ in range(rng.randint(1, 40))] for _ in range(300)]
    # tokens of real text that are whole characters (tags included), in random orders
    seen = sorted({i for ids in sequences[:len(texts)] for i in ids if "\ufffd" not in byte_bpe_tokenizer.decode([i])})
    sequences += [[rng.choice(seen) for _ in range(rng.randint(1, 40))] for _ in range(300)]
    fast_path = 0
    for ids in sequences:
        text = byte_bpe_tokenizer.decode(ids, skip_special_tokens=False)
        spans = byte_level_spans(raw, ids, text)
        if "\ufffd" in text:
            assert spans is None  # replaced bytes: left to the prefix method
            continue
        assert spans == token_char_spans(byte_bpe_tokenizer, ids), (ids, text)
        fast_path += 1
    assert fast_path >= 200
    # partial characters: the leading bytes get empty spans, as with prefixes
    words = byte_bpe_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("a 🙂 b")
    byte_tokens = [byte_bpe_tokenizer.convert_tokens_to_ids(char) for word, _ in words for char in word]
    assert byte_level_spans(raw, byte_tokens, "a 🙂 b") == token_char_spans(byte_bpe_tokenizer, byte_tokens)
    # another text, or a tokenizer that is not byte-level: no fast path
    assert byte_level_spans(raw, sequences[0], texts[0] + "x") is None
    assert byte_level_spans(span_tokenizer(metaspace_tokenizer), [5, 6], "ab") is None


def test_token_char_spans_skip_special_and_raw_tokenizer(byte_bpe_tokenizer):
    text = CORPUS[0]
    ids = byte_bpe_tokenizer(text, add_special_tokens=False)["input_ids"] + [byte_bpe_tokenizer.eos_token_id]
    spans = token_char_spans(byte_bpe_tokenizer, ids, skip_special_tokens=True)
    assert spans[-1] == (len(text), len(text))
    assert_tiles(spans[:-1], text)
    raw_spans = token_char_spans(byte_bpe_tokenizer.backend_tokenizer, ids)
    assert raw_spans[:-1] == spans[:-1] and raw_spans[-1][0] == len(text)
    assert token_char_spans(byte_bpe_tokenizer, []) == []


def test_response_entropies_with_real_tokenizer(byte_bpe_tokenizer):
    text = format_judgement("Response 1 is right. Response 2 miscounts the cats.", 1)
    ids = byte_bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = token_char_spans(byte_bpe_tokenizer, ids)
    h = list(np.linspace(0.1, 2.0, len(ids)))
    r = response_entropies(text, spans, h)
    verdict_char = parse_verdict(text).verdict_char
    answer_index = next(i for i, (s, e) in enumerate(spans) if s <= verdict_char < e)
    assert byte_bpe_tokenizer.decode(ids[answer_index - 1]) == "<answer>"
    assert r.answer_nats == pytest.approx(h[answer_index])
    think_tokens = [i for i, (s, e) in enumerate(spans) if s >= len("<think>") and e <= text.index("</think>")]
    assert r.max_token_nats == pytest.approx(max(h[i] for i in think_tokens))


def test_spans_and_answer_token_with_tiny_judge_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = format_judgement("Response 1 counts three cats. Response 2 says two, which is wrong.", 1)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    spans = token_char_spans(tokenizer, ids)
    decoded = tokenizer.decode(ids)
    assert decoded.startswith(text)
    assert_tiles(spans, decoded)
    h = [0.01 * (i + 1) for i in range(len(ids))]
    r = response_entropies(decoded, spans, h)
    answer_index = ids.index(tokenizer.convert_tokens_to_ids("<answer>")) + 1
    assert r.verdict == 1 and r.answer_nats == pytest.approx(h[answer_index])
