"""Model inputs for a judge: chat-template prompts, images, and completions appended to them.

One module builds every batch the judge sees, so training (SFT, the tiny judge's
pre-training), scoring, teacher forcing and evaluation feed it byte-identical prompts:

    batch = judge_batch_inputs(processor, pairs)                        # prompts, left-padded (generate)
    batch = judge_batch_inputs(processor, pairs, traces, padding_side="right", append_eos=True)  # SFT
    batch = append_completions(prompt_batch, completion_ids, pad_id)    # teacher forcing on token ids

Completions are tokenised on their own (`tokenizer(text, add_special_tokens=False)`)
and appended after the rendered prompt, so a completion's tokens are exactly the ones
the model would generate or be scored on; `completion_mask` marks them.
"""

from __future__ import annotations

from egt.prompts import judge_messages

# Per-token [batch, length] tensors that are rebuilt when completions are appended; image tensors pass through.
_PASS_THROUGH = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


def judge_prompts(processor, pairs, add_generation_prompt: bool = True) -> list[str]:
    """The chat-template text of each pair's judge prompt (image slots expanded later by the processor)."""
    return [processor.apply_chat_template(
        judge_messages(p.question, p.response_1, p.response_2, n_images=len(p.images)),
        tokenize=False, add_generation_prompt=add_generation_prompt) for p in pairs]


def judge_batch_inputs(processor, pairs, completions: list[str] | None = None,
                       add_generation_prompt: bool = True, padding_side: str = "left",
                       append_eos: bool = False):
    """Tokenised, padded judge prompts (+ optional teacher-forced completions) for a list of pairs.

    Returns a BatchFeature with input_ids, attention_mask, pixel_values,
    image_grid_thw, mm_token_type_ids, and with completions also
    completion_mask (1 on completion tokens; also on the appended eos when
    append_eos). Completions are tokenised on their own and appended, so the
    completion tokens are exactly tokenizer(completion).
    """
    texts = judge_prompts(processor, pairs, add_generation_prompt)
    images = [img for p in pairs for img in p.open_images()]
    return chat_batch_inputs(processor, texts, images, completions, padding_side, append_eos)


def chat_batch_inputs(processor, texts: list[str], images: list, completions: list[str] | None = None,
                      padding_side: str = "left", append_eos: bool = False):
    """judge_batch_inputs for prompts already rendered by the chat template (any prompt, not only the judge's)."""
    from transformers import BatchFeature

    tok = processor.tokenizer
    enc = processor(text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt")
    if completions is None and padding_side == "left":
        return enc
    if completions is not None and len(completions) != len(texts):
        raise ValueError(f"{len(completions)} completions for {len(texts)} prompts")
    completion_ids = []
    for i in range(len(texts)):
        ids = tok(completions[i], add_special_tokens=False)["input_ids"] if completions is not None else []
        completion_ids.append(ids + [tok.eos_token_id] if completions is not None and append_eos else ids)
    data = append_completions(enc, completion_ids, tok.pad_token_id, padding_side)
    if completions is None:
        del data["completion_mask"]
    return BatchFeature(data)


def append_completions(prompt_inputs, completion_ids: list[list[int]], pad_id: int,
                       padding_side: str = "left") -> dict:
    """A left-padded prompt batch + per-row completion token ids -> one batch padded on `padding_side`.

    Every per-token [batch, length] tensor (input_ids, attention_mask, mm_token_type_ids) is
    rebuilt: the completion extends input_ids, gets attention 1 and token type 0 (text).
    Image tensors pass through unchanged. Adds `completion_mask` (int64, 1 on completion tokens).
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    mask = prompt_inputs["attention_mask"].bool()
    batch, length = mask.shape
    if len(completion_ids) != batch:
        raise ValueError(f"{len(completion_ids)} completions for {batch} prompts")
    per_token = [k for k, v in prompt_inputs.items() if k not in _PASS_THROUGH and torch.is_tensor(v)
                 and v.dim() == 2 and tuple(v.shape) == (batch, length)]
    rows: dict[str, list[list[int]]] = {k: [] for k in per_token}
    for i, comp in enumerate(completion_ids):
        keep = mask[i]
        for k in per_token:
            extra = list(comp) if k == "input_ids" else [1] * len(comp) if k == "attention_mask" else [0] * len(comp)
            rows[k].append(prompt_inputs[k][i][keep].tolist() + extra)
    width = max(len(r) for r in rows["input_ids"])

    def padded(values: list[int], fill: int) -> list[int]:
        pad = [fill] * (width - len(values))
        return pad + values if padding_side == "left" else values + pad

    out = {k: torch.tensor([padded(r, pad_id if k == "input_ids" else 0) for r in rows[k]],
                           dtype=prompt_inputs[k].dtype) for k in per_token}
    prompt_lengths = mask.sum(dim=1).tolist()
    out["completion_mask"] = torch.tensor([padded([0] * n + [1] * len(c), 0)
                                           for n, c in zip(prompt_lengths, completion_ids)], dtype=torch.long)
    out.update({k: v for k, v in prompt_inputs.items() if k not in per_token})
    return out
