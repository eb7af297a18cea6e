"""Model inputs for a judge: chat-template prompts, images, and completions appended to them.

One module builds every batch the judge sees, so training (SFT, the tiny judge's
pre-training), scoring, teacher forcing and evaluation feed it byte-identical prompts:

    batch = judge_batch_inputs(processor, pairs)                        # prompts, left-padded (generate)
    batch = judge_batch_inputs(processor, pairs, traces, padding_side="right", append_eos=True)  # SFT
    batch = append_completions(prompt_batch, completion_ids, pad_id)    # teacher forcing on token ids

Completions are tokenised on their own (`tokenizer(text, add_special_tokens=False)`)
and appended after the rendered prompt, so a completion's tokens are exactly the ones
the model would generate or be scored on; `completion_mask` marks them. The appended
end of turn is the family's (egt.model.families: `<end_of_turn>` for Gemma 3, the tokenizer's
eos elsewhere).

Every model family of egt.model.families goes through the same functions. The processor does
the family-specific work (image tokens, pixel tensors); the rendered prompt already holds
every special token the chat template writes, so it is tokenised without adding more (a
Gemma tokenizer would add a second `<bos>`), and images are handed over per prompt (the
number of image slots in each prompt). `split_examples` / `collate_examples` cut a
right-padded batch into per-example tensors and put examples back together, with the
family's layout of pixel rows (`Family.pixel_rows`).
"""

from __future__ import annotations

from egt.core.prompts import judge_messages
from egt.model.families import IMAGE_KEYS, family_of_processor

# Per-token [batch, length] tensors are rebuilt when completions are appended; image tensors pass through.
_PASS_THROUGH = (*IMAGE_KEYS, "pixel_values_videos", "video_grid_thw")


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
    enc = processor(text=texts, images=images_per_prompt(processor, texts, images), padding=True,
                    padding_side="left", return_tensors="pt", add_special_tokens=False)
    if completions is None and padding_side == "left":
        return enc
    if completions is not None and len(completions) != len(texts):
        raise ValueError(f"{len(completions)} completions for {len(texts)} prompts")
    end = turn_end_id(processor) if append_eos else None
    completion_ids = []
    for i in range(len(texts)):
        ids = tok(completions[i], add_special_tokens=False)["input_ids"] if completions is not None else []
        completion_ids.append(ids + [end] if completions is not None and append_eos else ids)
    data = append_completions(enc, completion_ids, tok.pad_token_id, padding_side)
    if completions is None:
        del data["completion_mask"]
    return BatchFeature(data)


def images_per_prompt(processor, texts: list[str], images: list) -> list[list] | None:
    """A flat image list -> one list per prompt, by the image slots (`processor.image_token`) of each prompt."""
    if not images:
        return None
    slot = processor.image_token
    counts = [text.count(slot) for text in texts]
    if sum(counts) != len(images):
        raise ValueError(f"{len(images)} images for {sum(counts)} image slots ({slot}) in {len(texts)} prompts")
    nested, start = [], 0
    for n in counts:
        nested.append(list(images[start:start + n]))
        start += n
    return nested


def turn_end_id(processor) -> int:
    """The token that closes an assistant turn: the family's turn end (egt.model.families), e.g. `<|im_end|>`."""
    tok = processor.tokenizer
    token = family_of_processor(processor).turn_end
    token_id = tok.convert_tokens_to_ids(token)
    if token_id is None or token_id == tok.unk_token_id:
        raise ValueError(f"the tokenizer has no {token} token (the end of a turn in this family)")
    return token_id


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


# ---------------------------------------------------------------- examples <-> batches

def _pixel_rows(processor, batch, images_per_example: list[int]) -> list[int]:
    """How many rows of pixel_values (and pixel_attention_mask) belong to each example, by the family's layout."""
    layout = family_of_processor(processor).pixel_rows
    if layout == "grid":
        per_image = batch["image_grid_thw"].prod(dim=1).tolist()
        rows, start = [], 0
        for n in images_per_example:
            rows.append(int(sum(per_image[start:start + n])))
            start += n
        return rows
    if layout == "image":
        return list(images_per_example)
    if layout == "tokens":  # InternVL: image_seq_length context tokens per tile
        counts = (batch["input_ids"] == processor.image_token_id).sum(dim=1).tolist()
        return [int(c) // processor.image_seq_length for c in counts]
    if layout == "example":
        return [1] * len(images_per_example)
    raise ValueError(f"unknown pixel_rows layout {layout!r}")


def split_examples(processor, batch, images_per_example: list[int]) -> list[dict]:
    """A right-padded batch (`judge_batch_inputs(..., padding_side="right")`) -> one dict of unpadded tensors per row.

    Each dict holds the row's per-token tensors (input_ids, completion_mask, mm_token_type_ids or
    token_type_ids, ...; cut to the row's length; attention_mask is rebuilt by collate_examples) and
    its share of every image tensor of egt.model.families.IMAGE_KEYS.
    """
    import torch

    ids = batch["input_ids"]
    size, width = ids.shape
    if len(images_per_example) != size:
        raise ValueError(f"{len(images_per_example)} image counts for {size} examples")
    per_token = [k for k, v in batch.items() if k not in _PASS_THROUGH and k != "attention_mask"
                 and torch.is_tensor(v) and v.dim() == 2 and tuple(v.shape) == (size, width)]
    images = [k for k in batch if k in IMAGE_KEYS]
    unknown = [k for k in batch if k not in per_token and k not in images and k != "attention_mask"]
    if unknown:
        raise ValueError(f"cannot split {unknown} of a {type(processor).__name__} batch into examples")
    counts = {"images": list(images_per_example), "examples": [1] * size,
              "rows": _pixel_rows(processor, batch, images_per_example) if "pixel_values" in batch else None}
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    offsets = dict.fromkeys(counts, 0)
    examples = []
    for i in range(size):
        ex = {key: batch[key][i, :lengths[i]].clone() for key in per_token}
        for unit, per_example in counts.items():
            if per_example is None:
                continue
            n, start = per_example[i], offsets[unit]
            if n:
                for key in images:
                    if IMAGE_KEYS[key] == unit:
                        ex[key] = batch[key][start:start + n].clone()
            offsets[unit] += n
        examples.append(ex)
    return examples


def _cat_padded(tensors: list):
    """Concatenate on dim 0, zero-padding every other dim to the largest (what processors pad with)."""
    import torch

    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pad = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d - 1] - t.shape[d]]
        padded.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    return torch.cat(padded)


def collate_examples(examples: list[dict], pad_token_id: int) -> dict:
    """Right-pad examples from split_examples into one batch; labels are -100 outside completion_mask."""
    import torch

    width = max(len(ex["input_ids"]) for ex in examples)

    def pad(key, fill):
        return torch.stack([torch.nn.functional.pad(ex[key], (0, width - len(ex[key])), value=fill)
                            for ex in examples])

    input_ids = pad("input_ids", pad_token_id)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.stack([torch.nn.functional.pad(torch.ones_like(ex["input_ids"]),
                                                               (0, width - len(ex["input_ids"])))
                                       for ex in examples]),
    }
    image_keys = list(dict.fromkeys(k for ex in examples for k in ex if k in IMAGE_KEYS))
    for key in examples[0]:
        if key not in IMAGE_KEYS and key not in ("input_ids", "completion_mask"):
            batch[key] = pad(key, 0)
    completion_mask = pad("completion_mask", 0)
    batch["labels"] = torch.where(completion_mask.bool(), input_ids, torch.full_like(input_ids, -100))
    for key in image_keys:
        parts = [ex[key] for ex in examples if key in ex]
        if IMAGE_KEYS[key] == "examples" and len(parts) != len(examples):
            raise ValueError(f"{key} is per example: a batch cannot mix examples with and without images")
        batch[key] = _cat_padded(parts)
    return batch
