"""Load a judge (any Qwen2-VL-family checkpoint) and build the embedded tiny judge.

`egt model tiny --output runs/tiny --seed 0` writes, in Hugging Face format, a
Qwen2-VL judge that runs on a laptop CPU through the same code paths as
Qwen2.5-VL-7B: a byte-level BPE tokenizer trained locally on the synthetic
benchmark's text (egt.data.synth), the judge prompt and the chat template;
Qwen2VLImageProcessor / Qwen2VLVideoProcessor / Qwen2VLProcessor (64x64
images, patch 8, merge 2 -> 16 image tokens); and a
Qwen2VLForConditionalGeneration of ~0.86M parameters, pre-trained for
`pretrain_steps` (default 2,000, ~2 min on 2 cores) to caption synthetic scenes
(`pretrain_perception`), the way a real base VLM has learnt to see before it is
fine-tuned as a judge; `pretrain_steps=0` leaves it randomly initialised. Same
seed (and thread count) -> same files.

Two choices make the tiny judge able to see at all (probes in README,
Benchmarks, tiny judge): the rotary base is 10, not 10,000 -- Qwen2-VL's
multimodal RoPE gives the image-column axis the lowest frequencies, which at
10,000 turn only ~0.003 rad per column, so with 4 columns left and right look
the same to the language model and spatial questions stayed at chance; and the
captioning pre-training, which names every object's colour, shape, size and
place, so the judge traces (one or two decisive tokens each) need not teach
perception from scratch.

It reloads like any hub checkpoint:

    model, processor = load_judge("runs/tiny")   # AutoModelForImageTextToText + AutoProcessor
    batch = judge_batch_inputs(processor, pairs)  # everything model.generate needs

`<think>`, `</think>`, `<answer>`, `</answer>` are ordinary added tokens, not
special: TRL decodes completions with skip_special_tokens=True, which would
strip special ones and zero every reward.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from egt.config import StageConfig
from egt.io import write_json
from egt.prompts import JUDGE_INSTRUCTION, TAGS, judge_messages

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")

# Words that carry a judgement's content stay their own pre-tokens (BPE cannot merge them with their
# neighbours), so a colour, shape or number is the same token in the question, the responses and the
# trace, and the deciding "yes"/"no" is a token of its own (where max-token entropy looks); the fixed
# text between them merges freely (prompt: 39 text + 16 image tokens instead of ~93 with word splits).
CONTENT_WORDS = (r" ?\b(?:red|orange|yellow|green|blue|purple|left|right|yes|no|wrong|correct|incorrect|[0-9]+)\b"
                 r"| ?\b(?:circle|square|triangle)")

CAPTION_PROMPT = "Describe the image."  # the perception pre-training prompt

# Qwen2-VL's template, minus the default system prompt (every token costs CPU time).
# {% generation %} marks assistant text for TRL's assistant_only_loss.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>{% endif %}"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>{% endgeneration %}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>"
    "{% endif %}"
    "{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TinyConfig(StageConfig):
    output: Path = Field(..., description="folder for the HF-format judge")
    seed: int = 0
    vocab_size: int = Field(768, ge=300, description="BPE vocabulary incl. the 256 byte symbols and added tokens")
    corpus_pairs: int = Field(2000, ge=10, description="synthetic pairs whose text trains the tokenizer")
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    mrope_section: list[int] = Field([4, 6, 6], description="sums to head_dim / 2")
    rope_theta: float = Field(10.0, gt=0, description="rotary base; low so the 4 image columns get distinct angles")
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_heads: int = 2
    image_size_px: int = 64
    patch_size_px: int = 8
    merge_size: int = 2
    max_position_embeddings: int = 1024
    # perception pre-training (a base VLM sees before it judges)
    pretrain_steps: int = Field(2000, ge=0, description="optimizer steps of captioning synthetic scenes; 0 = random weights")
    pretrain_batch_size: int = Field(8, ge=1)
    pretrain_lr: float = Field(1e-3, gt=0)


# ---------------------------------------------------------------- building

def _tokenizer_corpus(cfg: TinyConfig) -> list[str]:
    from egt.data.synth import corpus_texts
    from egt.prompts import judge_prompt_text

    texts = corpus_texts(cfg.corpus_pairs, seed=cfg.seed)
    # The instruction and template text repeat in every prompt, so BPE learns them as few tokens.
    header = judge_prompt_text("Q", "A", "B")
    texts += [header, JUDGE_INSTRUCTION, "user\n", "assistant\n", "Question: ", "Response 1: ", "Response 2: ",
              CAPTION_PROMPT] * 200
    return texts


def _train_tokenizer(cfg: TinyConfig):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # No general word split, so the fixed prompt text becomes a few tokens (prompt length drives CPU
    # time); content words are isolated (see CONTENT_WORDS).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CONTENT_WORDS), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - len(TAGS), special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, min_frequency=2)
    tok.train_from_iterator(_tokenizer_corpus(cfg), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        bos_token=None, padding_side="left", model_max_length=cfg.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build_processor(cfg: TinyConfig, tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    pixels = cfg.image_size_px * cfg.image_size_px
    common = dict(patch_size=cfg.patch_size_px, merge_size=cfg.merge_size, temporal_patch_size=2,
                  size={"shortest_edge": pixels, "longest_edge": pixels})
    image_processor = Qwen2VLImageProcessor(**common)
    video_processor = Qwen2VLVideoProcessor(**common)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def _model_config(cfg: TinyConfig, tokenizer):
    from transformers import Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = cfg.hidden_size // cfg.num_heads
    if sum(cfg.mrope_section) * 2 != head_dim:
        raise ValueError(f"mrope_section {cfg.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    text = dict(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta, "mrope_section": list(cfg.mrope_section)},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=True)
    vision = dict(depth=cfg.vision_depth, embed_dim=cfg.vision_embed_dim, hidden_size=cfg.hidden_size,
                  num_heads=cfg.vision_heads, mlp_ratio=2, patch_size=cfg.patch_size_px,
                  spatial_merge_size=cfg.merge_size, temporal_patch_size=2)
    return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)


def pretrain_perception(model, processor, cfg: TinyConfig) -> dict:
    """Teach a freshly built judge to see: caption synthetic scenes (`synth.scene_caption`) for
    cfg.pretrain_steps steps (AdamW, cosine schedule, loss on the caption tokens only).

    A real base VLM is pre-trained on captions before anyone fine-tunes it as a judge; the tiny
    judge starts from random weights, and from the judge traces alone it learns to read colours,
    shapes and places slowly (one or two decisive tokens per trace). Returns loss and timing stats.
    """
    import math
    import time

    import torch
    from tqdm.auto import tqdm

    from egt.data.synth import caption_examples

    steps, batch = cfg.pretrain_steps, cfg.pretrain_batch_size
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]}],
        tokenize=False, add_generation_prompt=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, steps // 30)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="pre-training perception (captions)", unit="step", mininterval=2.0):
        examples = caption_examples(step * batch, batch, cfg.seed)
        inputs = chat_batch_inputs(processor, [prompt] * batch, [img for img, _ in examples],
                                   [text for _, text in examples], padding_side="right", append_eos=True)
        labels = inputs["input_ids"].masked_fill(inputs.pop("completion_mask") == 0, -100)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    tail = max(1, min(50, steps // 10))
    return {"pretrain_seconds": round(time.perf_counter() - t0, 1), "pretrain_steps": steps,
            "pretrain_first_loss": round(sum(losses[:tail]) / tail, 4),
            "pretrain_last_loss": round(sum(losses[-tail:]) / tail, 4)}


def build_tiny(cfg: TinyConfig) -> Path:
    """Build and save the tiny judge (tokenizer, processors, model, generation config) to cfg.output."""
    import torch
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(cfg)
    processor = _build_processor(cfg, tokenizer)
    config = _model_config(cfg, tokenizer)
    devices = [torch.device("cpu")]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2VLForConditionalGeneration(config)
    del devices
    stats = {}
    if cfg.pretrain_steps:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            stats = pretrain_perception(model, processor, cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id, do_sample=False, max_new_tokens=96)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    recipe = cfg.model_dump(mode="json", exclude={"output"})
    write_json(recipe, out / "egt_tiny.json", sort_keys=True)
    if stats:
        write_json(stats, out / "pretrain.json")
    return out


# ---------------------------------------------------------------- loading and batching

def load_judge(path: str | Path, device: str = "cpu", dtype: str = "auto"):
    """(model, processor) of a saved judge, model in eval mode on `device`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from egt.errors import EgtError

    path = Path(path)
    if path.exists() and not (path / "config.json").exists():
        raise EgtError(f"{path}: not a model folder (no config.json); build one with `egt model tiny --output {path}`")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch_dtype)
    processor = AutoProcessor.from_pretrained(str(path))
    model.to(device)
    model.eval()
    return model, processor


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
    import torch
    from transformers import BatchFeature

    tok = processor.tokenizer
    enc = processor(text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt")
    if completions is None and padding_side == "left":
        return enc
    if completions is not None and len(completions) != len(texts):
        raise ValueError(f"{len(completions)} completions for {len(texts)} prompts")
    rows = []
    for i in range(len(texts)):
        keep = enc["attention_mask"][i].bool()
        ids = enc["input_ids"][i][keep].tolist()
        mm = enc["mm_token_type_ids"][i][keep].tolist()
        comp = []
        if completions is not None:
            comp = tok(completions[i], add_special_tokens=False)["input_ids"]
            if append_eos:
                comp = comp + [tok.eos_token_id]
        rows.append((ids + comp, mm + [0] * len(comp), [0] * len(ids) + [1] * len(comp)))
    width = max(len(r[0]) for r in rows)
    pad_id = tok.pad_token_id

    def padded(values, fill):
        pad = [fill] * (width - len(values))
        return pad + values if padding_side == "left" else values + pad

    data = {
        "input_ids": torch.tensor([padded(r[0], pad_id) for r in rows], dtype=torch.long),
        "attention_mask": torch.tensor([padded([1] * len(r[0]), 0) for r in rows], dtype=torch.long),
        "mm_token_type_ids": torch.tensor([padded(r[1], 0) for r in rows], dtype=torch.long),
    }
    if completions is not None:
        data["completion_mask"] = torch.tensor([padded(r[2], 0) for r in rows], dtype=torch.long)
    for key in ("pixel_values", "image_grid_thw"):
        if key in enc:
            data[key] = enc[key]
    return BatchFeature(data)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
