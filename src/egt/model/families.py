"""Model families: what egt must know about each base VLM, in one place.

    from egt.model.families import family_of, FAMILIES
    family = family_of(model)          # by config.model_type, e.g. FAMILIES["qwen2_5_vl"]
    family.vision_tower, family.projector, family.turn_end

Every stage runs any of these families through the same code; the few facts that differ
between them live here and nowhere else:

- which modules are the vision tower and which the vision-language projector
  (`egt.model.training.freeze_vision` freezes them, its LoRA regex never touches them);
- how a processor batch's image tensors map to examples (`pixel_rows`), so that
  `egt.model.encoding` can cut a batch into examples and put examples back together;
- the token that closes a chat turn (`turn_end`: what SFT appends after a trace and
  where generation stops) where it is not the tokenizer's eos;
- the classes a real checkpoint of the family uses and one checkpoint to start from;
- how its processor's image size is capped (`image_size`, egt.model.loading.processor_size_kwargs): what
  `processor_max_pixels` / `processor_min_pixels` set, so a large image cannot cost thousands of tokens.

The tiny judges of each family (`egt model tiny --arch X`) are built by egt.tiny.families.
A model whose `model_type` is not here is refused with a one-line EgtError by the functions
that need family knowledge (no guessing from module names).
"""

from __future__ import annotations

from dataclasses import dataclass

from egt.core.errors import EgtError


@dataclass(frozen=True)
class Family:
    arch: str                       # egt's name = the checkpoint's config.model_type
    title: str
    model_class: str                # what AutoModelForImageTextToText loads
    processor_class: str            # what AutoProcessor loads
    checkpoint: str                 # a public checkpoint to start from (`model=...`)
    vision_tower: tuple[str, ...]   # module paths (under the model) of the vision encoder
    projector: tuple[str, ...]      # module paths of the vision-language projector (inside the tower for Qwen)
    # How pixel_values rows map to examples: "grid" = image_grid_thw.prod() rows per image (Qwen);
    # "image" = one row per image; "tokens" = image-token count / processor.image_seq_length rows per
    # example (InternVL tiles); "example" = one row per example, images on dim 1 (SmolVLM).
    pixel_rows: str
    turn_end: str                   # the token that closes a chat turn
    requires: tuple[str, ...] = ()  # optional packages its processor imports (all in the egt[families] extra)
    # How the image processor's cost is capped (IMAGE_SIZE_CAPS): "pixels" = resized into [min_pixels,
    # max_pixels] (Qwen); "tiles" = at most max_patches tiles (InternVL); "longest_edge" = the longest edge before
    # splitting into tiles (SmolVLM); "pinpoints" = the anyres grid resolutions (LLaVA-OneVision); "fixed" =
    # every image is resized to one size (Gemma 3: 896 x 896, 256 tokens), nothing to cap.
    image_size: str = "pixels"


_QWEN_TOWER = ("visual",)
FAMILIES: dict[str, Family] = {f.arch: f for f in (
    Family("qwen2_vl", "Qwen2-VL", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor",
           "Qwen/Qwen2-VL-7B-Instruct", _QWEN_TOWER, ("visual.merger",), "grid", "<|im_end|>"),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor",
           "Qwen/Qwen2.5-VL-7B-Instruct", _QWEN_TOWER, ("visual.merger",), "grid", "<|im_end|>"),
    Family("qwen3_vl", "Qwen3-VL", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor",
           "Qwen/Qwen3-VL-8B-Instruct", _QWEN_TOWER, ("visual.merger", "visual.deepstack_merger_list"), "grid",
           "<|im_end|>"),
    Family("qwen3_5", "Qwen3.5", "Qwen3_5ForConditionalGeneration", "Qwen3VLProcessor",
           "Qwen/Qwen3.5-27B", _QWEN_TOWER, ("visual.merger",), "grid", "<|im_end|>"),
    Family("gemma3", "Gemma 3", "Gemma3ForConditionalGeneration", "Gemma3Processor",
           "google/gemma-3-4b-it", ("vision_tower",), ("multi_modal_projector",), "image", "<end_of_turn>",
           image_size="fixed"),
    Family("smolvlm", "SmolVLM2", "SmolVLMForConditionalGeneration", "SmolVLMProcessor",
           "HuggingFaceTB/SmolVLM2-2.2B-Instruct", ("vision_model",), ("connector",), "example",
           "<end_of_utterance>", requires=("num2words",), image_size="longest_edge"),
    Family("internvl", "InternVL3", "InternVLForConditionalGeneration", "InternVLProcessor",
           "OpenGVLab/InternVL3-8B-hf", ("vision_tower",), ("multi_modal_projector",), "tokens", "<|im_end|>",
           image_size="tiles"),
    Family("llava_onevision", "LLaVA-OneVision", "LlavaOnevisionForConditionalGeneration",
           "LlavaOnevisionProcessor", "llava-hf/llava-onevision-qwen2-7b-ov-hf", ("vision_tower",),
           ("multi_modal_projector", "image_newline"), "image", "<|im_end|>", image_size="pinpoints"),
)}

# What processor_max_pixels / processor_min_pixels become, per Family.image_size (egt.model.loading).
IMAGE_SIZE_CAPS = {
    "pixels": "max_pixels / min_pixels: each image is resized so that its pixel count lies in [min, max]",
    "tiles": "max_patches = max_pixels // (tile height x tile width), at least 1 (with crop_to_patches)",
    "longest_edge": "size.longest_edge = the largest multiple of the tile edge whose square is <= max_pixels",
    "pinpoints": "image_grid_pinpoints: only the grid resolutions of at most max_pixels (at least the smallest)",
    "fixed": "none: every image is resized to the processor's one size",
}

# Keys of a processor batch that hold images, and what their first dimension counts.
IMAGE_KEYS = {"pixel_values": "rows", "pixel_attention_mask": "rows", "image_grid_thw": "images",
              "image_sizes": "images", "batch_num_images": "examples"}


def arches() -> list[str]:
    return list(FAMILIES)


def get_family(arch: str) -> Family:
    if arch not in FAMILIES:
        raise EgtError(f"unknown model family '{arch}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[arch]


def family_of(model_or_config) -> Family:
    """The family of a model (or its config) by config.model_type; EgtError for an unknown one."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise EgtError(f"model_type '{model_type}' is not a model family egt knows (known: {', '.join(FAMILIES)}); "
                       "add it to egt.model.families")
    return FAMILIES[model_type]


def family_of_processor(processor) -> Family:
    """The family whose processor class `processor` is (Qwen3VLProcessor -> qwen3_vl; qwen3_5 shares it)."""
    name = type(processor).__name__
    for family in FAMILIES.values():
        if family.processor_class == name:
            return family
    raise EgtError(f"processor {name} is not one of a model family egt knows "
                   f"({', '.join(sorted({f.processor_class for f in FAMILIES.values()}))})")


def check_dependencies(model_dir) -> None:
    """MissingDependency (one line, names the extra) if the family of the model folder needs a package that is
    not installed; a hub id or a folder without config.json is left to transformers."""
    import json
    from pathlib import Path

    from egt.core.errors import require

    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return
    family = FAMILIES.get(json.loads(config.read_text()).get("model_type"))
    for module in family.requires if family else ():
        require(module, "families", f"the {family.title} processor")


def vision_module_names() -> list[str]:
    """The first path component of every family's vision tower and projector (LoRA never matches them)."""
    names = {path.split(".")[0] for f in FAMILIES.values() for path in f.vision_tower + f.projector}
    return sorted(names)


def _under(name: str, path: str) -> bool:
    """Is parameter/module `name` (e.g. 'model.visual.blocks.0.attn.qkv.weight') under module path `path`?"""
    return f".{path}." in f".{name}."


def vision_part(family: Family, name: str) -> str | None:
    """'projector', 'tower' or None (language model) for a parameter name of a `family` model."""
    if any(_under(name, p) for p in family.projector):
        return "projector"
    if any(_under(name, p) for p in family.vision_tower):
        return "tower"
    return None
