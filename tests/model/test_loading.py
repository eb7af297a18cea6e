"""The embedded tiny judge: Auto-class loading, generation, save/load, tokenizer and chat template."""

from __future__ import annotations

import shutil

import pytest
import torch

from egt.core.errors import ConfigError
from egt.core.prompts import TAGS, parse_verdict
from egt.model.encoding import judge_batch_inputs, judge_prompts
from egt.model.loading import count_parameters, load_judge
from egt.tiny.build import SPECIAL_TOKENS, TinyConfig, build_tiny


@pytest.fixture(scope="module")
def judge(tiny_model_dir):
    return load_judge(tiny_model_dir)


def test_loads_with_auto_classes(tiny_model_dir, judge):
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )

    model, processor = judge
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert isinstance(processor, Qwen2VLProcessor)
    assert not model.training
    # the plain Auto classes, as a hub user would call them
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), Qwen2VLForConditionalGeneration)
    assert isinstance(AutoProcessor.from_pretrained(tiny_model_dir), Qwen2VLProcessor)
    assert 0.5e6 < count_parameters(model) < 1.5e6
    assert model.config.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


def test_tags_are_ordinary_added_tokens(judge):
    _, processor = judge
    tok = processor.tokenizer
    for tag in TAGS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, tag
        assert ids[0] not in tok.all_special_ids
        assert tok.decode(ids, skip_special_tokens=True) == tag
    added = {tok_.content: tok_.special for tok_ in tok.added_tokens_decoder.values()}
    assert all(added[special] for special in SPECIAL_TOKENS)
    assert not any(added[tag] for tag in TAGS)
    special_ids = [tok.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS]
    assert tok.decode(special_ids, skip_special_tokens=True) == ""
    text = "<think>I see a red circle.</think><answer>1</answer>"
    assert tok.decode(tok(text)["input_ids"] + [tok.eos_token_id], skip_special_tokens=True) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_byte_level_encodes_any_text(judge):
    _, processor = judge
    tok = processor.tokenizer
    text = "Ünïcode ✓ 数学 🙂 and yes/no"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_chat_template_places_image_tokens(synth_pairs_list, judge):
    _, processor = judge
    pair = synth_pairs_list[0]
    text = judge_prompts(processor, [pair])[0]
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>You judge")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert not judge_prompts(processor, [pair], add_generation_prompt=False)[0].endswith("assistant\n")
    batch = judge_batch_inputs(processor, synth_pairs_list[:3])
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # 64x64 image, patch 8, merge 2 -> 4x4 = 16 image tokens per prompt
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [16, 16, 16]
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]] * 3
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == image_id)
    assert batch["attention_mask"][:, -1].all()  # left padding


def test_assistant_turn_renders_with_eos(judge):
    _, processor = judge
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]},
                {"role": "assistant", "content": "<think>x</think><answer>2</answer>"}]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n<think>x</think><answer>2</answer><|im_end|>\n")


def test_completion_mask_marks_exactly_the_completion(synth_pairs_list, judge):
    _, processor = judge
    pairs = synth_pairs_list[:3]
    completions = ["<think>a</think><answer>1</answer>", "<think>longer text here</think><answer>2</answer>", "x"]
    batch = judge_batch_inputs(processor, pairs, completions, append_eos=True)
    prompt_only = judge_batch_inputs(processor, pairs)
    tok = processor.tokenizer
    for i, completion in enumerate(completions):
        ids = batch["input_ids"][i][batch["completion_mask"][i].bool()].tolist()
        assert ids == tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prompt_ids = batch["input_ids"][i][batch["attention_mask"][i].bool() & ~batch["completion_mask"][i].bool()]
        assert prompt_ids.tolist() == prompt_only["input_ids"][i][prompt_only["attention_mask"][i].bool()].tolist()
    right = judge_batch_inputs(processor, pairs, completions, padding_side="right")
    assert right["attention_mask"][:, 0].all()


@pytest.mark.slow
def test_generates_and_save_load_keeps_logits(tiny_model_dir, synth_pairs_list, judge, tmp_path):
    model, processor = judge
    batch = judge_batch_inputs(processor, synth_pairs_list[:4])
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    assert out.shape[0] == 4 and prompt_len < out.shape[1] <= prompt_len + 8
    assert torch.equal(out[:, :prompt_len], batch["input_ids"])
    texts = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(isinstance(parse_verdict(t).format_ok, bool) for t in texts)
    with torch.no_grad():
        logits = model(**batch).logits
    copy = tmp_path / "copy"
    model.save_pretrained(copy)
    processor.save_pretrained(copy)
    model2, processor2 = load_judge(copy)
    batch2 = judge_batch_inputs(processor2, synth_pairs_list[:4])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    with torch.no_grad():
        assert torch.equal(model2(**batch2).logits, logits)


def test_build_is_deterministic_for_a_seed(tiny_model_dir, tmp_path):
    again = build_tiny(TinyConfig(output=tmp_path / "again", seed=0, pretrain_steps=0))
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names and "chat_template.jinja" in names
    for name in names:
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    other = build_tiny(TinyConfig(output=tmp_path / "other", seed=1, pretrain_steps=0))
    assert (other / "model.safetensors").read_bytes() != (tiny_model_dir / "model.safetensors").read_bytes()
    shutil.rmtree(other)


@pytest.mark.slow
def test_perception_pretraining_lowers_caption_loss_and_is_deterministic(tiny_model_dir, tmp_path):
    import json

    cfg = dict(seed=0, pretrain_steps=40, pretrain_batch_size=4, pretrain_lr=3e-3)
    first = build_tiny(TinyConfig(output=tmp_path / "a", **cfg))
    stats = json.loads((first / "pretrain.json").read_text())
    assert stats["pretrain_steps"] == 40
    assert stats["pretrain_last_loss"] < 0.8 * stats["pretrain_first_loss"], stats
    # trained weights differ from the untrained build of the same seed; a rebuild gives the same bytes
    assert (first / "model.safetensors").read_bytes() != (tiny_model_dir / "model.safetensors").read_bytes()
    again = build_tiny(TinyConfig(output=tmp_path / "b", **cfg))
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    model, processor = load_judge(first)
    assert not model.training


def test_scene_captions_name_what_is_drawn():
    from egt.data import synth

    examples = synth.caption_examples(0, 60, seed=0)
    assert len({text for _, text in examples}) > 40
    for image, text in examples[:20]:
        assert image.size == (synth.IMAGE_SIZE_PX, synth.IMAGE_SIZE_PX) and text.startswith("I see ")
    scene = {"kind": "spatial", "objects": [
        {"shape": "circle", "colour": {"name": "red"}, "x": 10, "y": 50, "r": 9},
        {"shape": "square", "colour": {"name": "blue"}, "x": 32, "y": 30, "r": 5}]}
    assert synth.scene_caption(scene) == ("I see a large red circle at the bottom left and a small blue square "
                                          "in the centre. The red circle is left of the blue square.")
    count = {"kind": "count", "objects": [{"shape": "triangle", "colour": {"name": "green"}, "x": 5, "y": 5, "r": 4}] * 3}
    assert synth.scene_caption(count) == "I see 3 small green triangles."


def test_verify_examples_check_one_claim_against_the_scene():
    from egt.data import synth

    examples = synth.verify_examples(0, 40, seed=0)
    answers = [a for _, _, a in examples]
    assert 10 < sum(a.endswith(": yes.") for a in answers) < 30  # right and wrong claims, about half each
    for _, prompt, answer in examples:
        said = answer.split("The claim says ")[1].split(",")[0]
        seen = answer.split(", I see ")[1].rsplit(":", 1)[0]
        assert prompt.endswith("Is the claim right?") and said in prompt
        assert answer.endswith(": yes.") == (said == seen)
    scene = {"kind": "colour", "question": "What colour is the circle?", "claim": "green", "wrong_claim": "blue",
             "fact": "a green circle"}
    assert synth.verify_text(scene, right=False) == (
        "What colour is the circle? Claim: It is blue. Is the claim right?",
        "I see a green circle. The claim says blue, I see green: no.")


def test_shipped_base_is_the_default_recipe_and_loads():
    """What the demo fine-tunes: `egt model tiny` with the TinyConfig defaults, seed 0, pre-trained."""
    import json

    from egt.tiny.build import shipped_base

    base = shipped_base()
    recipe = json.loads((base / "egt_tiny.json").read_text())
    defaults = TinyConfig(output=base).model_dump(mode="json", exclude={"output", "arch"})  # as build_tiny writes it
    assert recipe == defaults
    stats = json.loads((base / "pretrain.json").read_text())
    assert stats["pretrain_steps"] == defaults["pretrain_steps"]
    assert stats["pretrain_last_loss"] < 0.3 * stats["pretrain_first_loss"]
    model, processor = load_judge(base)
    assert count_parameters(model) > 500_000 and processor.tokenizer.convert_tokens_to_ids("<answer>") > 0


def test_generation_config_stops_at_im_end(tiny_model_dir):
    import json

    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    model, processor = load_judge(tiny_model_dir)
    assert gen["eos_token_id"] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert gen["pad_token_id"] == processor.tokenizer.pad_token_id


def test_cli_builds_tiny(tmp_path):
    from egt.cli import main

    assert main(["model", "tiny", "--output", str(tmp_path / "m"), "--seed", "3", "pretrain_steps=3"]) == 0
    assert (tmp_path / "m" / "pretrain.json").exists()
    model, _ = load_judge(tmp_path / "m")
    assert count_parameters(model) > 0


def test_content_words_are_the_same_token_everywhere(judge):
    """A colour/shape/number is one shared token in prompt and trace (the judge links them by identity)."""
    _, processor = judge
    tok = processor.tokenizer
    for word in (" blue", " circle", " 3", " yes", " no", " left"):
        (word_id,) = tok(word, add_special_tokens=False)["input_ids"]
        for context in (f"It is{word}.", f"Response 1{word}: yes.", f"I see a{word} thing"):
            assert word_id in tok(context, add_special_tokens=False)["input_ids"], (word, context)


def test_dtype_names_are_checked(tiny_model_dir):
    from egt.core.config import load_config
    from egt.core.errors import ConfigError
    from egt.model.loading import canonical_dtype
    from egt.stages.evaluate import Config as EvalConfig
    from egt.stages.score import Config as ScoreConfig

    assert [canonical_dtype(n) for n in ("auto", "float32", "bf16", "fp16", "fp32")] == \
        ["auto", "float32", "bfloat16", "float16", "float32"]
    with pytest.raises(ValueError, match="auto, float32, bfloat16, float16"):
        canonical_dtype("float64")
    assert load_config(ScoreConfig, None, ["output=o", "dtype=bf16"]).dtype == "bfloat16"
    for cfg_cls, base in ((ScoreConfig, ["output=o"]), (EvalConfig, ["benchmark=pairs", "data=d", "model=m",
                                                                      "output=o"])):
        with pytest.raises(ConfigError, match=r"'dtype': Value error, must be one of .*\(got 'bfloat61'\)"):
            load_config(cfg_cls, None, base + ["dtype=bfloat61"])
    with pytest.raises(ConfigError, match="dtype: must be one of"):
        load_judge(tiny_model_dir, dtype="flaot32")


# ---------------------------------------------------------------- image-size caps, flash attention

def _big_image_tokens(processor, px=(640, 480)) -> int:
    from PIL import Image

    out = processor(text=["<|vision_start|><|image_pad|><|vision_end|>x"], images=[Image.new("RGB", px, "red")],
                    return_tensors="pt")
    return int((out["input_ids"] == processor.image_token_id).sum())


def test_max_pixels_caps_the_visual_tokens_of_a_qwen_judge(tiny_model_dir):
    from egt.model.loading import load_judge, load_processor, processor_size_kwargs

    assert processor_size_kwargs(tiny_model_dir) == {}
    assert processor_size_kwargs(tiny_model_dir, 128 * 128, 32 * 32) == \
        {"size": {"shortest_edge": 1024, "longest_edge": 16384}}
    assert processor_size_kwargs(tiny_model_dir, 128 * 128) == {"size": {"shortest_edge": 4096, "longest_edge": 16384}}
    assert processor_size_kwargs(tiny_model_dir, 128 * 128, for_vllm=True) == {"max_pixels": 16384}
    # the tiny judge resizes every image to 64 x 64 (16 tokens); a 128 x 128 cap lets a 640 x 480 image keep more
    # detail, and a 32 x 32 cap takes it down to 4: the cap decides the cost, not the image
    default = _big_image_tokens(load_processor(tiny_model_dir))
    larger = _big_image_tokens(load_processor(tiny_model_dir, max_pixels=128 * 128, min_pixels=32 * 32))
    smaller = _big_image_tokens(load_processor(tiny_model_dir, max_pixels=32 * 32, min_pixels=16 * 16))
    assert smaller < default < larger <= 128 * 128 // (16 * 16)
    _, processor = load_judge(tiny_model_dir, max_pixels=32 * 32, min_pixels=16 * 16)
    assert _big_image_tokens(processor) == smaller
    with pytest.raises(ConfigError, match="processor_min_pixels=4096 is above processor_max_pixels=1024"):
        processor_size_kwargs(tiny_model_dir, 1024, 4096)


@pytest.mark.parametrize("arch, cap, expected", [
    ("gemma3", dict(max_pixels=10_000), "nothing to cap"),
    ("internvl", dict(max_pixels=10_000, min_pixels=100), "Qwen families only"),
])
def test_caps_that_a_family_has_not_are_errors(tiny_family_dir, arch, cap, expected):
    from egt.model.loading import processor_size_kwargs

    with pytest.raises(ConfigError, match=expected):
        processor_size_kwargs(tiny_family_dir(arch), **cap)


@pytest.mark.parametrize("arch", ["internvl", "smolvlm", "llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_each_family_gets_its_own_cap_and_its_processor_loads_with_it(tiny_family_dir, arch):
    from egt.model.families import get_family
    from egt.model.loading import load_processor, processor_size_kwargs

    folder = tiny_family_dir(arch)
    kwargs = processor_size_kwargs(folder, max_pixels=64 * 64)
    kind = get_family(arch).image_size
    expected = {"pixels": "size", "tiles": "max_patches", "longest_edge": "size",
                "pinpoints": "image_grid_pinpoints"}[kind]
    assert list(kwargs) == [expected]
    image_processor = load_processor(folder, max_pixels=64 * 64).image_processor
    if kind == "pixels":
        assert image_processor.size["longest_edge"] == 64 * 64
    elif expected == "max_patches":
        assert image_processor.max_patches == kwargs["max_patches"] >= 1
    elif kind == "longest_edge":
        assert image_processor.size["longest_edge"] == kwargs["size"]["longest_edge"] <= 64
    else:
        assert [list(p) for p in image_processor.image_grid_pinpoints] == kwargs["image_grid_pinpoints"]


def test_flash_attention_without_its_package_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    from egt.core.errors import MissingDependency
    from egt.model.loading import check_attention

    check_attention(None)
    check_attention("sdpa")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(MissingDependency, match=r"pip install 'egt\[flash\]'.*attn_implementation: sdpa") as error:
        check_attention("flash_attention_2")
    assert "\n" not in str(error.value)
