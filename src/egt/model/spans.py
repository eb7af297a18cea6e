"""Which characters of a completion each of its tokens wrote: token -> character spans.

Entropies are per token, sentences and the answer tag are per character: these spans join them
(egt.model.entropy). Pure functions, no I/O.

- `token_char_spans`: any tokenizer, by decoding prefixes (block-wise, so not O(n^2) decodes).
- `byte_level_spans`: the same in one pass for a byte-level BPE tokenizer (GPT-2, Qwen, Llama 3),
  from each token's bytes; what scoring uses (`completion_spans` picks it when it applies).
- `spans_from_token_bytes`: the same from the raw bytes of each token, as an OpenAI-compatible
  server's log-probs give them (egt.judge.endpoint).

A byte-level token that ends inside a multi-byte character gets an empty span at that character's
start; the token that completes the character gets the character. The spans tile the text.
"""

from __future__ import annotations

from typing import Sequence


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _spans_from_ends(ends: list[int], start: int = 0) -> list[tuple[int, int]]:
    # Suffix minimum: a character belongs to a token only once every later prefix agrees on it.
    for i in range(len(ends) - 2, -1, -1):
        ends[i] = min(ends[i], ends[i + 1])
    spans, prev = [], start
    for end in ends:
        end = max(end, prev)
        spans.append((prev, end))
        prev = end
    return spans


def _batch_decode(tokenizer, sequences: list[list[int]], kwargs: dict) -> list[str]:
    if hasattr(tokenizer, "batch_decode"):  # transformers tokenizers and processors
        return tokenizer.batch_decode(sequences, **kwargs)
    return tokenizer.decode_batch(sequences, **kwargs)  # a raw `tokenizers.Tokenizer`


def _token_ends(tokenizer, ids: list[int], full: str, kwargs: dict,
                block: int = 64, context: int = 8) -> list[int]:
    """Raw end char of each token: how far decode(ids[:i+1]) agrees with `full`.

    Decoding every prefix costs O(n^2) tokens, so each block of `block` tokens is decoded from
    `context` tokens before it, anchored at the known start of the first context token. The
    anchor is trusted only if the context alone re-decodes to exactly the text already assigned
    to it (true for byte-level BPE; not where decoding depends on the sequence start, as with
    SentencePiece's leading space) and no decode holds U+FFFD (a character split over tokens,
    which byte-fallback decoders group across the anchor); otherwise the block is decoded from
    the start of the text.
    """
    ends = [0] * len(ids)
    for b in range(0, len(ids), block):
        e = min(len(ids), b + block)
        c = max(0, b - context)
        anchor = ends[c - 1] if c else 0
        local = _batch_decode(tokenizer, [ids[c:i + 1] for i in range(b, e)] + [ids[c:b]], kwargs)
        trusted = local[-1] == full[anchor:ends[b - 1] if b else 0] and not any("\ufffd" in t for t in local)
        if trusted:
            tail = full[anchor:]
            ends[b:e] = [anchor + _common_prefix_len(text, tail) for text in local[:-1]]
        else:
            prefixes = _batch_decode(tokenizer, [ids[:i + 1] for i in range(b, e)], kwargs)
            ends[b:e] = [_common_prefix_len(text, full) for text in prefixes]
    ends[-1] = len(full)
    return ends


def token_char_spans(tokenizer, token_ids: Sequence[int], *,
                     skip_special_tokens: bool = False) -> list[tuple[int, int]]:
    """Char span (start, end) of each token in `tokenizer.decode(token_ids)`; the spans tile it.

    Token i ends where decode(token_ids[:i+1]) stops agreeing with the full decode (computed
    block-wise, see `_token_ends`). A byte-level token that ends inside a multi-byte character
    (its prefix decodes to U+FFFD) gets an empty span; the token completing the character gets
    the whole character. Works with transformers tokenizers/processors and raw `tokenizers`.
    """
    ids = [int(t) for t in token_ids]
    if not ids:
        return []
    kwargs = {"skip_special_tokens": skip_special_tokens}
    full = tokenizer.decode(ids, **kwargs)
    return _spans_from_ends(_token_ends(tokenizer, ids, full, kwargs))


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2, Qwen, Llama 3): the character that stands for each byte.

    Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; the other 68 bytes, in order, for the characters U+0100, U+0101, ...
    Returns the inverse map, character -> byte.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    alphabet, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(0x100 + shifted)] = byte
            shifted += 1
    return alphabet


_BYTE_OF_CHAR = _byte_level_alphabet()
_TOKEN_BYTES_CACHE: dict[int, tuple[object, dict[int, bytes]]] = {}


def _token_bytes_table(raw) -> dict[int, bytes] | None:
    """Id -> bytes cache of a raw byte-level `tokenizers.Tokenizer` (None for another decoder)."""
    entry = _TOKEN_BYTES_CACHE.get(id(raw))
    if entry is not None and entry[0] is raw:
        return entry[1]
    if type(getattr(raw, "decoder", None)).__name__ != "ByteLevel" or not hasattr(raw, "id_to_token"):
        return None
    if len(_TOKEN_BYTES_CACHE) >= 8:
        _TOKEN_BYTES_CACHE.clear()
    table: dict[int, bytes] = {}
    _TOKEN_BYTES_CACHE[id(raw)] = (raw, table)
    return table


def byte_level_spans(raw, token_ids: Sequence[int], text: str) -> list[tuple[int, int]] | None:
    """`token_char_spans` in one pass for a byte-level BPE tokenizer: each token's bytes, decoded incrementally.

    `raw` is a `tokenizers.Tokenizer` (see `span_tokenizer`) and `text` the decoded completion.
    Returns None, and the caller decodes prefixes instead, unless the decoder is byte-level, every
    token maps to bytes, the bytes decode to exactly `text`, and `text` holds no U+FFFD (where
    invalid bytes were replaced, the prefix method decides which token wrote the replacement).
    For such completions the spans equal `token_char_spans`' (tests/model/test_entropy.py checks it).
    """
    if "\ufffd" in text:
        return None
    table = _token_bytes_table(raw)
    if table is None:
        return None
    pieces = []
    for token_id in token_ids:
        data = table.get(token_id)
        if data is None:
            token = raw.id_to_token(int(token_id))
            if token is None:
                return None
            # An added token whose text is not in the alphabet (e.g. holds a space) is its own UTF-8.
            data = bytes(_BYTE_OF_CHAR[c] for c in token) if all(c in _BYTE_OF_CHAR for c in token) \
                else token.encode("utf-8")
            table[token_id] = data
        pieces.append(data)
    decoded, spans = spans_from_token_bytes(pieces)
    return spans if decoded == text else None


def spans_from_token_bytes(token_bytes: Sequence[bytes]) -> tuple[str, list[tuple[int, int]]]:
    """Text and char span of each token, from the tokens' raw bytes (an OpenAI-compatible server's logprobs).

    The bytes are decoded incrementally as UTF-8: a token that ends inside a multi-byte character gets
    an empty span and the token that completes it gets the character, as in `token_char_spans`.
    Invalid bytes decode to U+FFFD.
    """
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts, spans, position = [], [], 0
    for i, data in enumerate(token_bytes):
        piece = decoder.decode(bytes(data), final=i == len(token_bytes) - 1)
        parts.append(piece)
        spans.append((position, position + len(piece)))
        position += len(piece)
    return "".join(parts), spans


def span_tokenizer(tokenizer):
    """The Rust `tokenizers.Tokenizer` behind a fast tokenizer when it decodes identically (no clean-up).

    token_char_spans decodes every prefix of a completion; through transformers' batch_decode
    that costs more than the entropy itself (per-id type checks), directly it is ~5x cheaper.
    """
    raw = getattr(tokenizer, "_tokenizer", None)
    if raw is None or not hasattr(raw, "decode_batch") or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return tokenizer
    return raw


def completion_spans(tokenizer, token_ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Char spans of a generated completion's tokens in `text` (its decode, special tokens kept).

    The one-pass byte-level method when the tokenizer is byte-level and its spans reproduce `text`,
    else prefix decoding through the fast tokenizer (or the given one where the two decode differently).
    """
    fast = span_tokenizer(tokenizer)
    spans = byte_level_spans(fast, token_ids, text) if fast is not tokenizer else None
    if spans is None:
        if fast is not tokenizer and fast.decode(token_ids, skip_special_tokens=False) != text:
            fast = tokenizer  # the texts must agree character for character
        spans = token_char_spans(fast, token_ids)
    return spans
