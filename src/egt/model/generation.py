"""Batched judge generation with per-request seeded sampling and per-token entropies.

    from egt.model.generation import JudgeRequest, judge, judgement_seed
    requests = [JudgeRequest(pair, judgement_seed(run_seed, pair.id, k)) for pair in pairs for k in range(8)]
    judgements = judge(model, processor, requests, temperature=1.0, with_entropy=True)

Used by `egt score`, `egt eval` and the local-HF teacher of `egt distill`.

How sampling works. `model.generate` runs greedy decoding (do_sample=False) under a
clean GenerationConfig (no repetition penalty, no top-k, no min length), and one
LogitsProcessor, `SeededSampler`, turns greedy decoding into sampling: for each sampled
row it divides the logits by the temperature, applies top-p when asked, and adds Gumbel
noise drawn from that row's own `torch.Generator`, seeded from the request's seed. The
argmax of logits/T + Gumbel noise is an exact sample from softmax(logits/T) (the
Gumbel-max trick). Each row draws one vocabulary-sized noise vector per step whatever
the batch holds, so a request's random stream depends only on its seed: not on batch
size, batch neighbours, order or process count. (The logits themselves can differ in
the last bits between batch compositions, through padding and kernel shapes; `egt score`
therefore fixes the batches inside each shard, which makes reruns bit-identical.)
A request with seed None is decoded greedily.

Which entropy is recorded. With `with_entropy=True` the same processor records, at every
step, `entropy.token_entropy(logits, temperature)`: the entropy of softmax(logits/T)
over the FULL vocabulary, from the model's raw next-token logits (fp32), i.e. taken
BEFORE top-p and before the noise. With top_p = 1 (the default) that is exactly the
distribution the token was drawn from. Greedy requests record it too (at the given T).
The processor keeps each step's logits and computes their entropies a block of steps at
a time (at most `ENTROPY_BUFFER_BYTES` of logits wait): one entropy call per block
instead of a dozen small tensor operations per step, which on a small model cost as
much as 5% of generation.

What a Judgement holds. Generation stops at an eos token (any of the model's
generation_config eos ids and the tokenizer's eos) or after `max_new_tokens`.
`token_ids` are the generated tokens BEFORE the eos (the eos and the padding after it
are dropped), `token_entropies_nats[i]` is the entropy of the step that wrote
`token_ids[i]`, and `text = tokenizer.decode(token_ids)` (special tokens kept, as
`egt.model.spans` decodes). `truncated` is True when no eos came. With `watch_token_ids`,
`watched_logits[i]` holds the raw logits of those tokens at the step that wrote `token_ids[i]`
(the reward service reads the verdict digits' probabilities there: egt.judge.probability).

`score_completions` is the teacher-forced counterpart: one forward pass over prompt +
given completion, entropy at the completion's positions (the logits at t-1 predict t).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from egt.core.prompts import Verdict, parse_verdict
from egt.core.records import PreferencePair
from egt.model.encoding import append_completions, judge_batch_inputs
from egt.model.entropy import token_entropy


@dataclass(frozen=True)
class JudgeRequest:
    pair: PreferencePair
    seed: int | None  # None = greedy


@dataclass
class Judgement:
    text: str
    token_ids: list[int]                       # generated tokens, eos and padding excluded
    token_entropies_nats: list[float] | None   # one per token_ids entry (None: not recorded)
    verdict: Verdict
    truncated: bool = False                    # stopped by max_new_tokens, not by eos
    watched_logits: list[list[float]] | None = None  # per token_ids entry: the raw logits of `watch_token_ids`


def judgement_seed(run_seed: int, pair_id: str, sample_index: int) -> int:
    """Seed of judgement `sample_index` of pair `pair_id`: stable across runs, machines and Python versions."""
    key = f"egt-judgement\x1f{int(run_seed)}\x1f{pair_id}\x1f{int(sample_index)}".encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1  # 63 bits: valid for manual_seed


# ---------------------------------------------------------------- the sampling processor

# Logits of the steps whose entropy is not computed yet, at most (then one token_entropy call takes them all).
ENTROPY_BUFFER_BYTES = 64 * 2**20


class SeededSampler(LogitsProcessor):
    """Per-row seeded Gumbel-max sampling at a temperature (optional top-p); records entropies.

    Must be the only processor that changes the logits, with do_sample=False (it keeps a
    reference to each step's logits until their entropies are computed; nothing may write
    into them in place). `entropies()` gives the recorded entropies as [batch, steps].
    """

    def __init__(self, seeds: Sequence[int | None], temperature: float = 1.0, top_p: float = 1.0,
                 record_entropy: bool = False, device: torch.device | str = "cpu",
                 entropy_buffer_bytes: int = ENTROPY_BUFFER_BYTES, watch_token_ids: Sequence[int] | None = None):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (use seed None for greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = float(temperature)
        self.top_p_warper = TopPLogitsWarper(top_p) if top_p < 1 else None
        self.record_entropy = record_entropy
        self.batch_size = len(seeds)
        self.sampled_rows = [i for i, seed in enumerate(seeds) if seed is not None]
        self.all_sampled = len(self.sampled_rows) == len(seeds)
        device = torch.device(device)
        self.generators = [torch.Generator(device=device).manual_seed(int(seeds[i])) for i in self.sampled_rows]
        self._row_index = torch.tensor(self.sampled_rows, dtype=torch.long, device=device)
        self.entropy_buffer_bytes = entropy_buffer_bytes
        self._pending: list[torch.Tensor] = []   # [batch, vocab] logits of steps not yet reduced
        self._pending_bytes = 0
        self._blocks: list[torch.Tensor] = []    # [steps, batch] entropies of the reduced steps
        # A few columns of every step's raw logits (e.g. the verdict digits, for answer probabilities).
        self._watch = torch.tensor(list(watch_token_ids), dtype=torch.long, device=device) \
            if watch_token_ids else None
        self._watched: list[torch.Tensor] = []   # [batch, len(watch_token_ids)] per step

    def _reduce_pending(self) -> None:
        if self._pending:
            self._blocks.append(token_entropy(torch.stack(self._pending), self.temperature))
            self._pending, self._pending_bytes = [], 0

    def entropies(self) -> torch.Tensor:
        """[batch, steps] entropy (nats) of every step so far (fp32, on the logits' device)."""
        self._reduce_pending()
        if not self._blocks:
            return torch.empty(self.batch_size, 0)
        return torch.cat(self._blocks).T

    def watched(self) -> torch.Tensor | None:
        """[batch, steps, len(watch_token_ids)] raw logits (fp32) of the watched tokens; None without them."""
        if self._watch is None:
            return None
        if not self._watched:
            return torch.empty(self.batch_size, 0, len(self._watch))
        return torch.stack(self._watched, dim=1)

    def gumbel_noise(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        """[sampled rows, vocab] standard Gumbel noise, one draw of `vocab_size` per row's generator."""
        uniform = torch.stack([torch.rand(vocab_size, generator=g, device=device, dtype=torch.float32)
                               for g in self.generators])
        return uniform.log_().neg_().log_().neg_()  # -log(-log u); u = 0 gives -inf (never chosen)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._watch is not None:
            self._watched.append(scores.index_select(-1, self._watch.to(scores.device)).float())
        if self.record_entropy:
            size = scores.numel() * scores.element_size()
            # A view into a larger block (e.g. every position's logits) would keep the block alive: copy it.
            self._pending.append(scores if scores.untyped_storage().nbytes() <= size else scores.clone())
            self._pending_bytes += size
            if self._pending_bytes >= self.entropy_buffer_bytes:
                self._reduce_pending()
        if not self.sampled_rows:
            return scores
        rows = scores if self.all_sampled else scores[self._row_index]
        z = rows / self.temperature
        if self.top_p_warper is not None:
            z = self.top_p_warper(input_ids if self.all_sampled else input_ids[self._row_index], z)
        z = z + self.gumbel_noise(scores.shape[-1], scores.device)
        if self.all_sampled:
            return z
        out = scores.clone()
        out[self._row_index] = z
        return out


def clean_generation_config(max_new_tokens: int, eos_token_ids: list[int], pad_token_id: int) -> GenerationConfig:
    """Greedy decoding with every logit-changing option explicitly off, so SeededSampler sees raw logits.

    Options left None would be filled from the checkpoint's generation_config (e.g.
    Qwen2.5-VL ships repetition_penalty 1.05 and top_k 1), so each is set here.
    """
    return GenerationConfig(
        max_new_tokens=max_new_tokens, min_length=0, do_sample=False, num_beams=1,
        num_return_sequences=1, temperature=1.0, top_p=1.0, top_k=50, typical_p=1.0, min_p=None,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        renormalize_logits=False, remove_invalid_values=False, forced_bos_token_id=None,
        forced_eos_token_id=None, eos_token_id=list(eos_token_ids), pad_token_id=pad_token_id,
        use_cache=True, output_scores=False, return_dict_in_generate=False)


def eos_token_ids(model, tokenizer) -> list[int]:
    """The model's generation_config eos id(s) plus the tokenizer's eos, in that order."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in ([configured] if isinstance(configured, int) else list(configured or [])) + [tokenizer.eos_token_id]:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    if not ids:
        raise ValueError("the model and tokenizer define no eos token; generation could not stop")
    return ids


def _decode(tokenizer, token_ids: list[int]) -> str:
    return tokenizer.decode(token_ids, skip_special_tokens=False) if token_ids else ""


def _progress(total: int, enabled: bool, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=not enabled, dynamic_ncols=True)


# ---------------------------------------------------------------- generation

def judge(model, processor, requests: Sequence[JudgeRequest], *, temperature: float = 1.0, top_p: float = 1.0,
          max_new_tokens: int = 256, batch_size: int = 16, with_entropy: bool = False,
          progress: bool = True, on_batch: Callable[[int], None] | None = None,
          watch_token_ids: Sequence[int] | None = None) -> list[Judgement]:
    """Generate one judgement per request, in request order, `batch_size` requests per generate call.

    `on_batch(n)` is called after each batch with its number of requests (for a caller's progress bar).
    `watch_token_ids`: record, at every step, the raw logits of these tokens (`Judgement.watched_logits`;
    egt.judge.probability reads the verdict digits' probabilities from them).
    """
    tokenizer = processor.tokenizer
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    gen_config = clean_generation_config(max_new_tokens, eos_ids, pad_id)
    device = model.device
    results: list[Judgement] = []
    with _progress(len(requests), progress, "judgement") as bar:
        for start in range(0, len(requests), batch_size):
            batch = list(requests[start:start + batch_size])
            inputs = judge_batch_inputs(processor, [r.pair for r in batch]).to(device)
            sampler = SeededSampler([r.seed for r in batch], temperature, top_p, with_entropy, device,
                                    watch_token_ids=watch_token_ids)
            prompt_len = inputs["input_ids"].shape[1]
            with torch.inference_mode():
                sequences = model.generate(**inputs, generation_config=gen_config,
                                           logits_processor=LogitsProcessorList([sampler]))
            generated = sequences[:, prompt_len:].cpu().tolist()
            entropies = sampler.entropies().float().cpu() if with_entropy else None
            watched = sampler.watched()
            watched = watched.cpu() if watched is not None else None
            for row, ids in enumerate(generated):
                stop = next((i for i, t in enumerate(ids) if t in eos_ids), None)
                kept = ids if stop is None else ids[:stop]
                text = _decode(tokenizer, kept)
                results.append(Judgement(
                    text=text, token_ids=kept,
                    token_entropies_nats=entropies[row, :len(kept)].tolist() if entropies is not None else None,
                    verdict=parse_verdict(text), truncated=stop is None,
                    watched_logits=watched[row, :len(kept)].tolist() if watched is not None else None))
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(len(batch))
    return results


# ---------------------------------------------------------------- teacher forcing

@contextmanager
def _placeholder_tokens_as_text(model, inputs: dict, pad_id: int):
    """Teacher-force completions that contain image/video placeholder ids (untrained models write them).

    Every family finds where the image features go by the placeholder ids in input_ids, so a
    completion's placeholders would break that count. As in generation, they are embedded as
    plain tokens: the model sees input_ids with the completion's placeholders replaced by
    padding (the placeholder count is right), and a hook on the input embedding puts the true
    ids' embeddings back at those positions (positions and token types come from the prompt,
    not from the ids). Yields the inputs to call the model with.
    """
    config = getattr(model, "config", None)
    placeholders = [getattr(config, name, None) for name in ("image_token_id", "video_token_id")]
    placeholders = torch.tensor([p for p in placeholders if p is not None], dtype=torch.long)
    completion_mask = inputs.pop("completion_mask").bool()
    ids = inputs["input_ids"]
    stray = completion_mask & torch.isin(ids, placeholders) if len(placeholders) else None
    if stray is None or not bool(stray.any()):
        yield inputs
        return
    embedding = model.get_input_embeddings()
    true_embeds = embedding(ids.to(model.device))
    mask = stray.to(model.device).unsqueeze(-1)

    def restore(module, args, output):
        if output.shape[:2] != mask.shape[:2]:
            return output
        return torch.where(mask, true_embeds.to(output.dtype), output)

    handle = embedding.register_forward_hook(restore)
    try:
        yield {**inputs, "input_ids": ids.masked_fill(stray, pad_id)}
    finally:
        handle.remove()


def score_completions(model, processor, pairs: Sequence[PreferencePair], completions: Sequence[str | Sequence[int]],
                      *, temperature: float = 1.0, batch_size: int = 16, progress: bool = True,
                      entropy_chunk_size: int | None = None,
                      on_batch: Callable[[int], None] | None = None) -> list[Judgement]:
    """Teacher-forced judgements: entropy of each given completion token, one forward pass per batch.

    A completion is a string (tokenised on its own, no special tokens added, as
    `judge_batch_inputs` does) or a list of token ids (e.g. what vLLM generated). Only the
    last `max completion length + 1` positions' logits are computed (`logits_to_keep`).
    """
    if len(pairs) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(pairs)} pairs")
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_ids(model, tokenizer)[0]
    token_lists = [tokenizer(c, add_special_tokens=False)["input_ids"] if isinstance(c, str) else [int(t) for t in c]
                   for c in completions]
    results: list[Judgement] = []
    with _progress(len(pairs), progress, "judgement") as bar:
        for start in range(0, len(pairs), batch_size):
            batch_pairs = list(pairs[start:start + batch_size])
            batch_ids = token_lists[start:start + batch_size]
            longest = max(len(ids) for ids in batch_ids)
            entropies = None
            if longest:
                prompts = judge_batch_inputs(processor, batch_pairs)
                with torch.inference_mode(), \
                        _placeholder_tokens_as_text(model, append_completions(prompts, batch_ids, pad_id), pad_id) as inputs:
                    inputs = {k: (v.to(model.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
                    logits = model(**inputs, logits_to_keep=longest + 1).logits  # [B, longest + 1, V]
                    # Kept position j predicts kept position j + 1; the last one predicts nothing.
                    entropies = token_entropy(logits[:, :-1], temperature, entropy_chunk_size).float().cpu()
                del logits, inputs
            for row, ids in enumerate(batch_ids):
                text = _decode(tokenizer, ids)
                values = entropies[row, longest - len(ids):].tolist() if ids else []
                results.append(Judgement(text=text, token_ids=list(ids), token_entropies_nats=values,
                                         verdict=parse_verdict(text), truncated=False))
            bar.update(len(batch_pairs))
            if on_batch is not None:
                on_batch(len(batch_pairs))
    return results


def next_token_logits(model, processor, pairs: Sequence[PreferencePair], completion_ids: Sequence[Sequence[int]],
                      token_ids: Sequence[int], *, batch_size: int = 16) -> torch.Tensor:
    """Teacher-forced raw logits of `token_ids` at the position after prompt + completion: [len(pairs), len(token_ids)].

    One forward pass per batch (left-padded, only the last position's logits computed); the reward
    service forces `<answer>` after a judgement that wrote no verdict and reads the digits here.
    """
    if len(pairs) != len(completion_ids):
        raise ValueError(f"{len(completion_ids)} completions for {len(pairs)} pairs")
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_ids(model, tokenizer)[0]
    watch = torch.tensor(list(token_ids), dtype=torch.long)
    out = []
    for start in range(0, len(pairs), batch_size):
        batch_pairs = list(pairs[start:start + batch_size])
        batch_ids = [list(ids) for ids in completion_ids[start:start + batch_size]]
        prompts = judge_batch_inputs(processor, batch_pairs)
        with torch.inference_mode(), \
                _placeholder_tokens_as_text(model, append_completions(prompts, batch_ids, pad_id), pad_id) as inputs:
            inputs = {k: (v.to(model.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
            logits = model(**inputs, logits_to_keep=1).logits[:, -1, :]
            out.append(logits.index_select(-1, watch.to(logits.device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, len(watch))
