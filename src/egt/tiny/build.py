"""The embedded tiny judge: `egt model tiny --output runs/tiny --seed 0`.

Writes, in Hugging Face format, a Qwen2-VL judge that runs on a laptop CPU through the
same code paths as Qwen2.5-VL-7B: a byte-level BPE tokenizer trained locally on the
synthetic benchmark's text (egt.data.synth), the judge prompt and the chat template;
Qwen2VLImageProcessor / Qwen2VLVideoProcessor / Qwen2VLProcessor (64x64 images, patch
8, merge 2 -> 16 image tokens); and a Qwen2VLForConditionalGeneration of ~0.86M
parameters, pre-trained for `pretrain_steps` (default 10,000, ~12 min on 2 cores) to
caption synthetic scenes and to check single claims about them (egt.tiny.pretrain), the way a
real instruction-tuned VLM has learnt to see and to verify a statement before it is
fine-tuned as a judge; `pretrain_steps=0` leaves it randomly initialised. egt ships the
result of the defaults (`shipped_base`), so the demo does not pre-train.
Same seed (and thread count) -> same files. It reloads like any hub checkpoint
(`egt.model.loading.load_judge`, or AutoModelForImageTextToText + AutoProcessor).

Two choices make the tiny judge able to see at all (probes in docs/benchmarks.md, tiny
judge): the rotary base is 10, not 10,000 -- Qwen2-VL's multimodal RoPE gives the
image-column axis the lowest frequencies, which at 10,000 turn only ~0.003 rad per
column, so with 4 columns left and right look the same to the language model and
spatial questions stayed at chance; and the captioning pre-training, which names every
object's colour, shape, size and place, so the judge traces (one or two decisive tokens
each) need not teach perception from scratch.

`<think>`, `</think>`, `<answer>`, `</answer>` are ordinary added tokens, not special:
TRL decodes completions with skip_special_tokens=True, which would strip special ones
and zero every reward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from egt.core.config import StageConfig
from egt.core.files import write_json
from egt.core.prompts import JUDGE_INSTRUCTION, TAGS
from egt.model.families import FAMILIES
from egt.tiny.pretrain import CAPTION_PROMPT, pretrain_perception

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")

# Words that carry a judgement's content stay their own pre-tokens (BPE cannot merge them with their
# neighbours), so a colour, shape or number is the same token in the question, the responses and the
# trace, and the deciding "yes"/"no" is a token of its own (where max-token entropy looks); the fixed
# text between them merges freely (prompt: 39 text + 16 image tokens instead of ~93 with word splits).
CONTENT_WORDS = (r" ?\b(?:red|orange|yellow|green|blue|purple|left|right|yes|no|wrong|correct|incorrect|[0-9]+)\b"
                 r"| ?\b(?:circle|square|triangle)")

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
    arch: Literal[tuple(FAMILIES)] = Field("qwen2_vl", description="model family (egt.model.families); all but "
                                           "qwen2_vl are built by egt.tiny.families")
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
    pretrain_steps: int = Field(10000, ge=0, description="optimizer steps of pre-training (captions and single-claim "
                                "checks); 0 = random weights")
    pretrain_batch_size: int = Field(8, ge=1)
    pretrain_lr: float = Field(1e-3, gt=0)
    pretrain_verify_share: float = Field(0.5, ge=0, le=1, description="share of each pre-training batch that "
                                         "checks one claim about the image instead of captioning it")


# ---------------------------------------------------------------- building

def _tokenizer_corpus(cfg: TinyConfig, extra_texts: tuple[str, ...] = ()) -> list[str]:
    from egt.core.prompts import judge_prompt_text
    from egt.data.synth import corpus_texts

    texts = corpus_texts(cfg.corpus_pairs, seed=cfg.seed)
    # The instruction and template text repeat in every prompt, so BPE learns them as few tokens.
    header = judge_prompt_text("Q", "A", "B")
    texts += [header, JUDGE_INSTRUCTION, "user\n", "assistant\n", "Question: ", "Response 1: ", "Response 2: ",
              CAPTION_PROMPT] * 200
    texts += list(extra_texts) * 200
    return texts


def train_bpe(cfg: TinyConfig, special_tokens=SPECIAL_TOKENS, extra_texts: tuple[str, ...] = ()):
    """The byte-level BPE every tiny judge shares: `special_tokens` first, then the learnt merges, then TAGS
    as ordinary added tokens (a `tokenizers.Tokenizer`; each family wraps it with its own conventions).
    `extra_texts`: a family's template text, learnt like the judge prompt's."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    # No general word split, so the fixed prompt text becomes a few tokens (prompt length drives CPU
    # time); content words are isolated (see CONTENT_WORDS).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CONTENT_WORDS), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - len(TAGS), special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, min_frequency=2)
    tok.train_from_iterator(_tokenizer_corpus(cfg, extra_texts), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    return tok


def _train_tokenizer(cfg: TinyConfig):
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(cfg)
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


SHIPPED_BASE = Path(__file__).parent.parent / "assets" / "tiny_judge_base"


def shipped_base() -> Path:
    """The pre-trained tiny base that ships with egt (what `egt demo` fine-tunes by default).

    Built once with `egt model tiny --output src/egt/assets/tiny_judge_base` (the TinyConfig
    defaults, seed 0; its recipe and pre-training losses are in egt_tiny.json / pretrain.json
    beside the weights), so a demo does not spend minutes pre-training; a rebuild on another
    machine differs in the last bits of the weights (CPU kernels)."""
    from egt.core.errors import EgtError

    if not (SHIPPED_BASE / "model.safetensors").exists():
        raise EgtError(f"{SHIPPED_BASE}: the shipped tiny base is missing; rebuild it with "
                       f"`egt model tiny --output {SHIPPED_BASE}` or pass base_model=PATH")
    return SHIPPED_BASE


def seeded_model(model_class, config, processor, cfg: TinyConfig):
    """(model, pre-training stats): `model_class(config)` initialised under `cfg.seed`, then pre-trained for
    `cfg.pretrain_steps` (egt.tiny.pretrain) under the same seed; the global RNG is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = model_class(config)
    stats = {}
    if cfg.pretrain_steps:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            stats = pretrain_perception(model, processor, cfg.pretrain_steps, cfg.pretrain_batch_size,
                                        cfg.pretrain_lr, cfg.seed, cfg.pretrain_verify_share)
    return model, stats


def build_tiny(cfg: TinyConfig) -> Path:
    """Build and save the tiny judge (tokenizer, processors, model, generation config) to cfg.output."""
    if cfg.arch != "qwen2_vl":
        from egt.core.errors import EgtError

        raise EgtError(f"build_tiny builds the Qwen2-VL judge; arch={cfg.arch} is built by egt.tiny.families.build "
                       "(what `egt model tiny --arch ...` runs)")
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(cfg)
    processor = _build_processor(cfg, tokenizer)
    config = _model_config(cfg, tokenizer)
    model, stats = seeded_model(Qwen2VLForConditionalGeneration, config, processor, cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id, do_sample=False, max_new_tokens=96)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # `arch` is left out so that a Qwen2-VL build's files stay byte-identical to those built before it existed.
    recipe = cfg.model_dump(mode="json", exclude={"output", "arch"})
    write_json(recipe, out / "egt_tiny.json", sort_keys=True)
    if stats:
        write_json(stats, out / "pretrain.json")
    return out
