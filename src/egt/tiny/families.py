"""Tiny judges of every model family: `egt model tiny --arch gemma3 --output runs/tiny_gemma3`.

`build(cfg)` is what `egt model tiny` runs: egt.tiny.build.build_tiny builds the default Qwen2-VL
judge, and this module builds the same judge in the other families of egt.model.families, each with the family's own processor, image processor, chat
template, image-token layout, special tokens and model class, saved in Hugging Face format
and loadable with AutoProcessor + AutoModelForImageTextToText:

| arch | processor (image processor) | image tokens of a 64x64 image | turn end |
|---|---|---|---|
| qwen2_5_vl | Qwen2_5_VLProcessor (Qwen2VLImageProcessor) | `<|vision_start|>` + 16 `<|image_pad|>` + `<|vision_end|>` | `<|im_end|>` |
| qwen3_vl | Qwen3VLProcessor (Qwen2VLImageProcessor, Qwen3VLVideoProcessor) | same | `<|im_end|>` |
| qwen3_5 | Qwen3VLProcessor | same | `<|im_end|>` |
| gemma3 | Gemma3Processor (Gemma3ImageProcessor) | `\\n\\n<start_of_image>` + 16 `<image_soft_token>` + `<end_of_image>\\n\\n` | `<end_of_turn>` |
| smolvlm | SmolVLMProcessor (SmolVLMImageProcessor, no splitting) | `<fake_token_around_image><global-img>` + 16 `<image>` + `<fake_token_around_image>` | `<end_of_utterance>` |
| internvl | InternVLProcessor (GotOcr2ImageProcessor, one tile) | `<img>` + 16 `<IMG_CONTEXT>` + `</img>` | `<|im_end|>` |
| llava_onevision | LlavaOnevisionProcessor (anyres, one 64 px grid cell) | 16 base + 16 grid + 4 newline `<image>` tokens | `<|im_end|>` |

Every family uses egt.tiny.build's locally trained byte-level BPE (`tiny.train_bpe`), trained
with the family's special tokens; `<think>`, `</think>`, `<answer>`, `</answer>` are
ordinary (non-special) added tokens in all of them, so TRL's skip_special_tokens=True
decoding keeps them. Gemma 3's tokenizer, like the real one, adds `<bos>` and its eos is
`<eos>` while a turn ends with `<end_of_turn>` (both stop generation, as in the real
generation_config). The chat templates follow each family's published template, minus
default system prompts.

TinyConfig's sizes mean the same in every family (hidden_size, num_layers, heads,
vision_depth, vision_embed_dim, image_size_px, patch_size_px, merge_size = the factor by
which image tokens are merged per side: Qwen's spatial merge, SmolVLM's scale factor,
InternVL's pixel shuffle, Gemma 3's pooling); the patch size is 16 for LLaVA-OneVision
(its anyres layout adds a grid and a newline per row, so patch 8 would cost 144 image
tokens). mrope_section and rope_theta apply to the Qwen families (Qwen3-VL and Qwen3.5 use
interleaved multimodal RoPE; Qwen3.5 rotates all of head_dim here, not a quarter, and
alternates linear- and full-attention layers); the 1-D RoPE families use rope_theta too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from egt.core.errors import EgtError
from egt.model.families import get_family
from egt.tiny.build import CHAT_TEMPLATE, SPECIAL_TOKENS, TinyConfig, build_tiny, seeded_model, train_bpe

__all__ = ["TinyConfig", "build"]

# ---------------------------------------------------------------- chat templates (published conventions)

# Gemma 3: bos, `<start_of_turn>user` / `model`, contents trimmed, images as `<start_of_image>`.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# SmolVLM2: `<|im_start|>` once, then `User:` / `Assistant:` turns closed by `<end_of_utterance>`.
SMOLVLM_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# InternVL3 (-hf): ChatML, an image is `<IMG_CONTEXT>` + newline (the processor expands it to <img>...</img>).
INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# LLaVA-OneVision (-hf, Qwen2 language model): role then a space, all images first, each text on a new line.
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\n' + message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class _Spec:
    special_tokens: tuple[str, ...]
    eos: str
    pad: str
    bos: str | None
    extra_special_tokens: dict[str, str]
    chat_template: str
    build_processor: Callable      # (cfg, tokenizer) -> processor
    build_config: Callable         # (cfg, tokenizer) -> PretrainedConfig
    model_class: str
    add_bos: bool = False           # the tokenizer adds bos itself (Gemma)
    template_texts: tuple[str, ...] = ()   # the template's fixed text, learnt by the BPE like the prompt's
    tokenizer_class: str | None = None     # the class transformers loads for this family whatever the file says


# ---------------------------------------------------------------- shared pieces

def _ids(tokenizer, *tokens: str) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}


def _head_dim(cfg) -> int:
    return cfg.hidden_size // cfg.num_heads


def _text(cfg, tokenizer, **extra) -> dict:
    """Language-model sizes every family shares."""
    return dict(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
                tie_word_embeddings=True, **extra)


def _rope(cfg, **extra) -> dict:
    return {"rope_type": "default", "rope_theta": cfg.rope_theta, **extra}


def _tokens_per_image(cfg, patch: int | None = None) -> int:
    side = cfg.image_size_px // (patch or cfg.patch_size_px)
    return (side // cfg.merge_size) ** 2


def _qwen_image_processors(cfg, video_class: str):
    import transformers

    pixels = cfg.image_size_px * cfg.image_size_px
    common = dict(patch_size=cfg.patch_size_px, merge_size=cfg.merge_size, temporal_patch_size=2,
                  size={"shortest_edge": pixels, "longest_edge": pixels})
    return transformers.Qwen2VLImageProcessor(**common), getattr(transformers, video_class)(**common)


def _qwen_token_ids(tokenizer) -> dict:
    ids = _ids(tokenizer, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def _chatml_ids(tokenizer) -> dict:
    ids = _ids(tokenizer, *CHATML)
    return dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def _qwen_vision(cfg, **extra) -> dict:
    return dict(depth=cfg.vision_depth, hidden_size=cfg.vision_embed_dim, intermediate_size=2 * cfg.vision_embed_dim,
                num_heads=cfg.vision_heads, out_hidden_size=cfg.hidden_size, patch_size=cfg.patch_size_px,
                spatial_merge_size=cfg.merge_size, temporal_patch_size=2, **extra)


def _siglip(cfg, patch: int) -> dict:
    return dict(model_type="siglip_vision_model", hidden_size=cfg.vision_embed_dim,
                intermediate_size=2 * cfg.vision_embed_dim, num_hidden_layers=cfg.vision_depth,
                num_attention_heads=cfg.vision_heads, image_size=cfg.image_size_px, patch_size=patch)


# ---------------------------------------------------------------- Qwen2.5-VL, Qwen3-VL, Qwen3.5

def _qwen_spec(processor_class: str, video_class: str, build_config: Callable, model_class: str,
               tokenizer_class: str | None = None) -> _Spec:
    def processor(cfg, tokenizer):
        import transformers

        image, video = _qwen_image_processors(cfg, video_class)
        return getattr(transformers, processor_class)(image_processor=image, tokenizer=tokenizer,
                                                      video_processor=video, chat_template=CHAT_TEMPLATE)

    return _Spec(SPECIAL_TOKENS, "<|im_end|>", "<|endoftext|>", None,
                 {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                  "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
                 CHAT_TEMPLATE, processor, build_config, model_class, tokenizer_class=tokenizer_class)


def _check_mrope(cfg, rotary_dim: int) -> None:
    if sum(cfg.mrope_section) * 2 != rotary_dim:
        raise EgtError(f"mrope_section {cfg.mrope_section} must sum to {rotary_dim // 2} (rotary dim / 2)")


def _qwen2_5_vl_config(cfg, tokenizer):
    from transformers import Qwen2_5_VLConfig

    _check_mrope(cfg, _head_dim(cfg))
    window = cfg.patch_size_px * cfg.merge_size * 2   # 2x2 merged cells per attention window
    return Qwen2_5_VLConfig(
        text_config=_text(cfg, tokenizer, rope_parameters=_rope(cfg, mrope_section=list(cfg.mrope_section)),
                          **_chatml_ids(tokenizer)),
        vision_config=_qwen_vision(cfg, window_size=window, fullatt_block_indexes=[cfg.vision_depth - 1]),
        tie_word_embeddings=True, **_qwen_token_ids(tokenizer))


def _qwen3_vl_config(cfg, tokenizer):
    from transformers import Qwen3VLConfig

    _check_mrope(cfg, _head_dim(cfg))
    side = cfg.image_size_px // cfg.patch_size_px
    return Qwen3VLConfig(
        text_config=_text(cfg, tokenizer, head_dim=_head_dim(cfg),
                          rope_parameters=_rope(cfg, mrope_section=list(cfg.mrope_section), mrope_interleaved=True),
                          **_chatml_ids(tokenizer)),
        vision_config=_qwen_vision(cfg, num_position_embeddings=side * side,
                                   deepstack_visual_indexes=[cfg.vision_depth - 1]),
        tie_word_embeddings=True, **_qwen_token_ids(tokenizer))


def _qwen3_5_config(cfg, tokenizer):
    from transformers import Qwen3_5Config

    _check_mrope(cfg, _head_dim(cfg))
    side = cfg.image_size_px // cfg.patch_size_px
    # The published layout: three linear-attention (Gated DeltaNet) layers, then one full-attention layer.
    layer_types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(cfg.num_layers)]
    linear_heads = max(1, cfg.num_kv_heads)
    return Qwen3_5Config(
        text_config=_text(cfg, tokenizer, head_dim=_head_dim(cfg), layer_types=layer_types,
                          linear_num_key_heads=linear_heads, linear_num_value_heads=2 * linear_heads,
                          linear_key_head_dim=_head_dim(cfg), linear_value_head_dim=_head_dim(cfg),
                          rope_parameters=_rope(cfg, mrope_section=list(cfg.mrope_section), mrope_interleaved=True,
                                                partial_rotary_factor=1.0),
                          **_chatml_ids(tokenizer)),
        vision_config=_qwen_vision(cfg, num_position_embeddings=side * side),
        tie_word_embeddings=True, **_qwen_token_ids(tokenizer))


# ---------------------------------------------------------------- Gemma 3

def _gemma3_spec() -> _Spec:
    def processor(cfg, tokenizer):
        from transformers import Gemma3ImageProcessor, Gemma3Processor

        image = Gemma3ImageProcessor(size={"height": cfg.image_size_px, "width": cfg.image_size_px},
                                     do_pan_and_scan=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return Gemma3Processor(image_processor=image, tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE,
                               image_seq_length=_tokens_per_image(cfg))

    def config(cfg, tokenizer):
        from transformers import Gemma3Config

        ids = _ids(tokenizer, "<pad>", "<eos>", "<bos>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
        head_dim = _head_dim(cfg)
        # Gemma 3 interleaves five sliding-window layers with one global layer.
        layer_types = ["full_attention" if (i + 1) % 6 == 0 or i == cfg.num_layers - 1 else "sliding_attention"
                       for i in range(cfg.num_layers)]
        text = _text(cfg, tokenizer, head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=512,
                     layer_types=layer_types,
                     rope_parameters={"sliding_attention": _rope(cfg), "full_attention": _rope(cfg)},
                     pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"])
        return Gemma3Config(text_config=text, vision_config=_siglip(cfg, cfg.patch_size_px),
                            mm_tokens_per_image=_tokens_per_image(cfg), boi_token_index=ids["<start_of_image>"],
                            eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
                            tie_word_embeddings=True)

    return _Spec(("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>"), "<eos>", "<pad>", "<bos>",
                 {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
                 GEMMA3_TEMPLATE, processor, config, "Gemma3ForConditionalGeneration", add_bos=True,
                 template_texts=("user\n", "model\n"))


# ---------------------------------------------------------------- SmolVLM2

def _smolvlm_spec() -> _Spec:
    def processor(cfg, tokenizer):
        from egt.core.errors import require

        require("num2words", "families", "the SmolVLM processor (egt model tiny --arch smolvlm, or a SmolVLM model)")
        from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

        edge = {"longest_edge": cfg.image_size_px}
        image = SmolVLMImageProcessor(do_image_splitting=False, size=edge, max_image_size=edge,
                                      image_mean=[0.5] * 3, image_std=[0.5] * 3)
        video = SmolVLMVideoProcessor(size=edge, max_image_size=edge, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return SmolVLMProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                image_seq_len=_tokens_per_image(cfg), chat_template=SMOLVLM_TEMPLATE)

    def config(cfg, tokenizer):
        from transformers import SmolVLMConfig

        ids = _ids(tokenizer, "<|im_start|>", "<end_of_utterance>", "<|im_end|>", "<image>")
        text = _text(cfg, tokenizer, model_type="llama", head_dim=_head_dim(cfg), rope_parameters=_rope(cfg),
                     bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"],
                     pad_token_id=ids["<|im_end|>"])
        vision = dict(hidden_size=cfg.vision_embed_dim, intermediate_size=2 * cfg.vision_embed_dim,
                      num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_heads,
                      image_size=cfg.image_size_px, patch_size=cfg.patch_size_px)
        return SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=cfg.merge_size,
                             image_token_id=ids["<image>"], pad_token_id=ids["<|im_end|>"], tie_word_embeddings=True)

    return _Spec(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                  "<image>", "<global-img>", "<video>"), "<end_of_utterance>", "<|im_end|>", "<|im_start|>",
                 {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                  "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"},
                 SMOLVLM_TEMPLATE, processor, config, "SmolVLMForConditionalGeneration",
                 template_texts=("User:", "Assistant:"))


# ---------------------------------------------------------------- InternVL3

def _internvl_spec() -> _Spec:
    def processor(cfg, tokenizer):
        from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

        size = {"height": cfg.image_size_px, "width": cfg.image_size_px}
        image = GotOcr2ImageProcessor(size=size, crop_to_patches=False)
        video = InternVLVideoProcessor(size=size)
        return InternVLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                 image_seq_length=_tokens_per_image(cfg), chat_template=INTERNVL_TEMPLATE)

    def config(cfg, tokenizer):
        from transformers import InternVLConfig

        text = _text(cfg, tokenizer, model_type="qwen2", rope_parameters=_rope(cfg), **_chatml_ids(tokenizer))
        vision = dict(hidden_size=cfg.vision_embed_dim, intermediate_size=2 * cfg.vision_embed_dim,
                      num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_heads,
                      image_size=[cfg.image_size_px] * 2, patch_size=[cfg.patch_size_px] * 2)
        return InternVLConfig(text_config=text, vision_config=vision,
                              image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                              image_seq_length=_tokens_per_image(cfg), downsample_ratio=1 / cfg.merge_size,
                              tie_word_embeddings=True)

    return _Spec(CHATML + ("<img>", "</img>", "<IMG_CONTEXT>", "<video>"), "<|im_end|>", "<|endoftext|>", None,
                 {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                  "video_token": "<video>"},
                 INTERNVL_TEMPLATE, processor, config, "InternVLForConditionalGeneration")


# ---------------------------------------------------------------- LLaVA-OneVision

LLAVA_ONEVISION_PATCH = 16


def _llava_onevision_spec() -> _Spec:
    def processor(cfg, tokenizer):
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        size = {"height": cfg.image_size_px, "width": cfg.image_size_px}
        grid = [[cfg.image_size_px, cfg.image_size_px]]
        image = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=grid, image_mean=[0.5] * 3,
                                             image_std=[0.5] * 3)
        video = LlavaOnevisionVideoProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        side = cfg.image_size_px // LLAVA_ONEVISION_PATCH
        return LlavaOnevisionProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                       num_image_tokens=side * side, vision_feature_select_strategy="full",
                                       chat_template=LLAVA_ONEVISION_TEMPLATE)

    def config(cfg, tokenizer):
        from transformers import LlavaOnevisionConfig

        text = _text(cfg, tokenizer, model_type="qwen2", rope_parameters=_rope(cfg), **_chatml_ids(tokenizer))
        ids = _ids(tokenizer, "<image>", "<video>")
        return LlavaOnevisionConfig(text_config=text, vision_config=_siglip(cfg, LLAVA_ONEVISION_PATCH),
                                    image_token_index=ids["<image>"], video_token_index=ids["<video>"],
                                    image_grid_pinpoints=[[cfg.image_size_px, cfg.image_size_px]],
                                    vision_feature_select_strategy="full", vision_feature_layer=-1,
                                    tie_word_embeddings=True)

    return _Spec(CHATML + ("<image>", "<video>"), "<|im_end|>", "<|endoftext|>", None,
                 {"image_token": "<image>", "video_token": "<video>"},
                 LLAVA_ONEVISION_TEMPLATE, processor, config, "LlavaOnevisionForConditionalGeneration",
                 template_texts=("user ", "assistant\n"))


def _spec(arch: str) -> _Spec:
    specs = {
        "qwen2_5_vl": lambda: _qwen_spec("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor", _qwen2_5_vl_config,
                                         "Qwen2_5_VLForConditionalGeneration"),
        "qwen3_vl": lambda: _qwen_spec("Qwen3VLProcessor", "Qwen3VLVideoProcessor", _qwen3_vl_config,
                                       "Qwen3VLForConditionalGeneration"),
        # AutoTokenizer always loads a qwen3_5 checkpoint's tokenizer as Qwen3_5Tokenizer (its own
        # pre-tokenizer and NFC normaliser), so the tiny judge is built with that class too.
        "qwen3_5": lambda: _qwen_spec("Qwen3VLProcessor", "Qwen3VLVideoProcessor", _qwen3_5_config,
                                      "Qwen3_5ForConditionalGeneration", tokenizer_class="Qwen3_5Tokenizer"),
        "gemma3": _gemma3_spec, "smolvlm": _smolvlm_spec, "internvl": _internvl_spec,
        "llava_onevision": _llava_onevision_spec,
    }
    get_family(arch)
    if arch not in specs:
        raise EgtError(f"egt model tiny has no recipe for arch '{arch}' (it builds: qwen2_vl, {', '.join(specs)})")
    return specs[arch]()


# ---------------------------------------------------------------- building

def build_tokenizer(cfg, spec: _Spec):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(cfg, spec.special_tokens, spec.template_texts)
    if spec.add_bos:  # like the real tokenizer; egt renders the template (which writes bos) and adds none itself
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A $B", special_tokens=[(spec.bos, tok.token_to_id(spec.bos))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=spec.eos, pad_token=spec.pad, unk_token=None, bos_token=spec.bos,
        padding_side="left", model_max_length=cfg.max_position_embeddings, clean_up_tokenization_spaces=False,
        extra_special_tokens=dict(spec.extra_special_tokens))
    fast.chat_template = spec.chat_template
    if spec.tokenizer_class is None:
        return fast
    import tempfile

    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        return getattr(transformers, spec.tokenizer_class).from_pretrained(tmp)


def build(cfg: TinyConfig) -> Path:
    """`egt model tiny`: the tiny judge of family `cfg.arch` in cfg.output (qwen2_vl: egt.tiny.build.build_tiny)."""
    if cfg.arch == "qwen2_vl":
        return build_tiny(cfg)
    return build_family(cfg)


def build_family(cfg: TinyConfig) -> Path:
    """Build and save the tiny judge of family `cfg.arch` (any but qwen2_vl) to cfg.output."""
    import transformers
    from transformers import GenerationConfig

    from egt.core.files import write_json

    spec = _spec(cfg.arch)
    family = get_family(cfg.arch)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg, spec)
    processor = spec.build_processor(cfg, tokenizer)
    config = spec.build_config(cfg, tokenizer)
    model, stats = seeded_model(getattr(transformers, spec.model_class), config, processor, cfg)
    stops = list(dict.fromkeys([tokenizer.convert_tokens_to_ids(family.turn_end), tokenizer.eos_token_id]))
    model.generation_config = GenerationConfig(
        eos_token_id=stops if len(stops) > 1 else stops[0], pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, do_sample=False, max_new_tokens=96)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_json(cfg.model_dump(mode="json", exclude={"output"}), out / "egt_tiny.json", sort_keys=True)
    if stats:
        write_json(stats, out / "pretrain.json")
    return out
