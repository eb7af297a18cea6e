"""Every model family of egt.model.families, stage by stage, on its tiny judge (egt.tiny.families, random weights).

Per family: the judge loads with the Auto classes as the family's own classes; the judge prompt carries the
family's image tokens; `freeze_vision` freezes exactly the vision tower and projector (counted against the
modules themselves); LoRA targets only the language model; then the pipeline: oracle and hf distill ->
full SFT and LoRA SFT (merged) -> score (generated and teacher forced) -> 2 GRPO steps -> eval in both
orders -> every output reloads. Kept cheap: 4 traces, 1-2 steps, a few tokens per judgement.
"""

from __future__ import annotations

import gc
import json
import math
import re

import sys

import pytest
import torch

from egt.core.prompts import TAGS
from egt.core.records import read_pairs, read_rows, write_pairs
from egt.model.families import FAMILIES, family_of, vision_part
from egt.model.loading import load_judge

ARCHES = list(FAMILIES)
# Image tokens a 64x64 image becomes in the prompt (egt.tiny.families' table), counted by the model's placeholder id.
IMAGE_TOKENS = {"qwen2_vl": 16, "qwen2_5_vl": 16, "qwen3_vl": 16, "qwen3_5": 16, "gemma3": 16, "smolvlm": 16,
                "internvl": 16, "llava_onevision": 36}


@pytest.fixture(scope="module", autouse=True)
def _frozen_gc():
    """Every Trainer run ends in accelerate's gc.collect(), which walks every object torch, transformers and TRL
    keep (~1 s of CPU each, 24 runs here); objects that exist now are left out of those walks."""
    import peft  # noqa: F401  (imported before the freeze, so their objects are frozen too)
    import transformers  # noqa: F401
    import trl  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _module_params(model, paths) -> set[str]:
    """Names of the parameters of the modules (or parameters) at `paths` under model.model, found by object."""
    names = set()
    by_id = {id(p): n for n, p in model.named_parameters()}
    for path in paths:
        target = model.model.get_submodule(path) if not hasattr(model.model, path) or \
            isinstance(getattr(model.model, path), torch.nn.Module) else getattr(model.model, path)
        tensors = target.parameters() if isinstance(target, torch.nn.Module) else [target]
        names |= {by_id[id(p)] for p in tensors}
    return names


# ---------------------------------------------------------------- the built judge

@pytest.mark.parametrize("arch", ARCHES)
def test_tiny_judge_is_the_family_it_claims(arch, tiny_family_dir, synth_pairs_list):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from egt.model.encoding import judge_batch_inputs, judge_prompts, turn_end_id

    family = FAMILIES[arch]
    path = tiny_family_dir(arch)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == family.model_class and type(processor).__name__ == family.processor_class
    assert family_of(model) is family and 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.5e6
    tok = processor.tokenizer
    for tag in TAGS:  # ordinary added tokens: TRL's skip_special_tokens=True decoding keeps them
        (tag_id,) = tok(tag, add_special_tokens=False)["input_ids"]
        assert tag_id not in tok.all_special_ids
    text = "<think>I see a red circle.</think><answer>1</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids + [turn_end_id(processor)], skip_special_tokens=True) == text
    assert turn_end_id(processor) in ([model.generation_config.eos_token_id]
                                      if isinstance(model.generation_config.eos_token_id, int)
                                      else model.generation_config.eos_token_id)
    # the judge prompt: the family's template, one image slot expanded to the family's image tokens
    prompt = judge_prompts(processor, synth_pairs_list[:1])[0]
    assert prompt.count(processor.image_token) == 1 and "Response 2:" in prompt
    batch = judge_batch_inputs(processor, synth_pairs_list[:2])
    image_id = model.config.image_token_id
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [IMAGE_TOKENS[arch]] * 2
    if tok.bos_token is not None and prompt.startswith(tok.bos_token):  # Gemma: the template's bos, no second one
        assert (batch["input_ids"][:, :3] == tok.bos_token_id).sum(dim=1).tolist() == [1, 1]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


@pytest.mark.parametrize("arch", ARCHES)
def test_freeze_vision_freezes_exactly_the_tower_and_projector(arch, tiny_family_dir):
    from peft import get_peft_model

    from egt.model.training import LANGUAGE_LORA_TARGETS, freeze_vision, lora_config

    family = FAMILIES[arch]
    model, _ = load_judge(tiny_family_dir(arch))
    all_names = {n for n, _ in model.named_parameters()}
    projector = _module_params(model, family.projector)
    tower = _module_params(model, family.vision_tower) - projector
    language = {n for n in all_names if n.startswith(("model.language_model.", "model.text_model.", "lm_head"))}
    assert tower and projector and language
    assert tower | projector | language == all_names and not (tower | projector) & language
    assert {n for n in all_names if vision_part(family, n) == "tower"} == tower
    numel = {n: p.numel() for n, p in model.named_parameters()}

    assert freeze_vision(model, tower=True, merger=False) == sum(numel[n] for n in tower)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == tower
    assert freeze_vision(model, tower=True, merger=True) == sum(numel[n] for n in tower | projector)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == tower | projector

    # LoRA by default: the language model's attention and MLP projections, nothing of the vision side
    model, _ = load_judge(tiny_family_dir(arch))
    lm_prefix = ("model.text_model." if arch == "smolvlm" else "model.language_model.")  # SmolVLM (Idefics3) names
    expected = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                and n.startswith(lm_prefix) and n.rsplit(".", 1)[-1] in LANGUAGE_LORA_TARGETS}
    peft = get_peft_model(model, lora_config(2, 4, 0.0, LANGUAGE_LORA_TARGETS))
    adapted = {re.sub(r"^base_model\.model\.", "", n) for n, m in peft.named_modules() if hasattr(m, "lora_A")}
    assert adapted == expected and len(expected) >= 4 * model.config.get_text_config().num_hidden_layers


# ---------------------------------------------------------------- the pipeline

@pytest.fixture(scope="module")
def traces(synth_pairs_path, tmp_path_factory):
    from egt.stages import distill

    out = tmp_path_factory.mktemp("family_traces")
    distill.run(distill.Config(pairs=synth_pairs_path("train", n=4, seed=5), output=out, backend="oracle",
                               oracle_wrong_rate=0.0, progress=False))
    return out / "traces.parquet"


@pytest.fixture(scope="module")
def pool(synth_pairs_path, tmp_path_factory):
    """2 pool pairs with an `order` (a curated file) and their oracle traces (teacher-forced scoring)."""
    from egt.data.synth import oracle_trace

    pairs = read_pairs(synth_pairs_path("pool", n=2, seed=6))
    for i, pair in enumerate(pairs):
        pair.extra["order"] = i
        pair.extra["trace"] = oracle_trace(pair)
    return write_pairs(pairs, tmp_path_factory.mktemp("family_pool") / "selected.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHES)
def test_every_stage_runs_on_the_family(arch, tiny_family_dir, traces, pool, tmp_path):
    from egt.stages import distill, evaluate, rl, score, sft

    base = tiny_family_dir(arch)
    family = FAMILIES[arch]
    # distill with the judge itself as a local teacher: it runs and its (untrained) traces are filtered
    out = distill.run(distill.Config(pairs=pool, output=tmp_path / "distill", backend="hf", model=str(base),
                                     device="cpu", max_attempts=1, max_tokens=4, batch_size=2, progress=False))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] + stats["dropped"] == 2 and 0 < stats["completion_tokens"] <= 2 * 4

    # full SFT: the language model learns, the vision tower stays frozen (default), the projector trains
    common = dict(traces=traces, model=str(base), learning_rate=1e-2, per_device_train_batch_size=2,
                  warmup_steps=0.0, lr_scheduler_type="constant", logging_steps=1, save_steps=100,
                  progress=False, torch_threads=1)
    full = sft.run(sft.Config(output=tmp_path / "sft", max_steps=2, **common))
    before, after = _params(load_judge(base)[0]), _params(load_judge(full / "model")[0])
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    parts = {n: vision_part(family, n) for n in before}
    assert changed and not any(parts[n] == "tower" for n in changed)
    assert any(parts[n] == "projector" for n in changed) and any(parts[n] is None for n in changed)
    # LoRA SFT, merged: only the language model's projections change, and the model loads without PEFT
    lora = sft.run(sft.Config(output=tmp_path / "lora", max_steps=1, lora=True, lora_r=2, **common))
    merged = _params(load_judge(lora / "model")[0])
    assert merged.keys() == before.keys()
    changed = {n for n in before if not torch.equal(before[n], merged[n])}
    assert changed and all(parts[n] is None and n.endswith("_proj.weight") for n in changed)

    # score: K=2 generated judgements with finite entropies; teacher-forced oracle traces parse to the label
    scored = score.run(score.Config(model=str(full / "model"), pairs=pool, output=tmp_path / "score", samples=2,
                                    max_new_tokens=6, batch_size=4, progress=False))
    rows = read_rows(scored / "scores.parquet")
    assert len(rows) == 2 and all(len(r["completions"]) == 2 for r in rows)
    assert all(math.isfinite(r["mean_token_entropy_nats"]) and r["mean_token_entropy_nats"] > 0 for r in rows)
    forced = score.run(score.Config(model=str(full / "model"), pairs=pool, output=tmp_path / "tf",
                                    mode="teacher_forced", batch_size=2, progress=False))
    rows = read_rows(forced / "scores.parquet")
    assert [r["verdicts"] for r in rows] == [[r["label"]] for r in rows] and all(r["parse_failures"] == 0 for r in rows)
    assert all(math.isfinite(r[c]) for r in rows for c in ("answer_entropy_nats", "sentence_entropy_nats",
                                                           "max_token_entropy_nats"))

    # 2 GRPO steps on the SFT judge; the vision tower and projector stay frozen
    trained = rl.run(rl.Config(model=full / "model", train=pool, output=tmp_path / "rl", max_steps=2,
                               num_generations=2, per_device_train_batch_size=2, max_completion_length=6,
                               learning_rate=1e-2, save_steps=100, seed=0, both_orders=False))
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["global_step"] == 2
    assert [line["ids"] for line in rl.read_consumed(trained / "consumed.jsonl")] == \
        [[p.id] for p in read_pairs(pool)]
    after_rl = _params(load_judge(trained / "model")[0])
    assert all(torch.equal(after[n], after_rl[n]) for n in after if parts[n] is not None)

    # eval in both orders with the RL judge
    result = evaluate.run(evaluate.Config(benchmark="pairs", data=pool, model=trained / "model", orders="both",
                                          output=tmp_path / "eval", max_new_tokens=4, batch_size=4, progress=False))
    predictions = [json.loads(line) for line in (result / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 and all(len(p["rewards"]) == 2 for p in predictions)
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["n_pairs"] == 2


@pytest.mark.parametrize("arch", ARCHES)
def test_examples_split_and_collate_like_one_batch(arch, tiny_family_dir, traces):
    """SFT's cached examples (cut from batches of 2 by the family's pixel layout) collate to exactly the batch
    the on-the-fly collator builds, and each example's image tensors are those of the pair processed alone."""
    from transformers import AutoProcessor

    from egt.model.encoding import judge_batch_inputs
    from egt.model.families import IMAGE_KEYS
    from egt.stages.sft import JudgeCollator, encode_examples

    processor = AutoProcessor.from_pretrained(tiny_family_dir(arch))
    pairs = read_pairs(traces)[:3]
    texts = [p.extra["trace"] for p in pairs]
    examples = encode_examples(processor, pairs, texts, chunk_size=2)
    rows = [{"idx": 2}, {"idx": 0}, {"idx": 1}]
    cached = JudgeCollator(processor, pairs, texts, examples)(rows)
    lazy = JudgeCollator(processor, pairs, texts, None)(rows)
    assert cached.keys() == lazy.keys() and "pixel_values" in cached
    for key in cached:
        assert torch.equal(cached[key], lazy[key]), key
    single = judge_batch_inputs(processor, pairs[2:], texts[2:], padding_side="right", append_eos=True)
    assert torch.equal(examples[2]["input_ids"], single["input_ids"][0])
    for key in set(IMAGE_KEYS) & set(single):
        assert torch.equal(examples[2][key], single[key]), key


def test_unknown_families_are_refused_in_one_line(tiny_model_dir, tmp_path, monkeypatch):
    import sys

    from egt.cli import main
    from egt.core.errors import EgtError, MissingDependency
    from egt.model.families import check_dependencies, get_family
    from egt.model.training import freeze_vision
    from egt.tiny.build import TinyConfig, build_tiny

    with pytest.raises(EgtError, match="unknown model family 'llama'"):
        get_family("llama")
    model, _ = load_judge(tiny_model_dir)
    model.config.model_type = "mystery_vl"
    with pytest.raises(EgtError, match="model_type 'mystery_vl' is not a model family egt knows"):
        freeze_vision(model)
    with pytest.raises(EgtError, match="build_tiny builds the Qwen2-VL judge"):
        build_tiny(TinyConfig(output=tmp_path / "x", arch="gemma3"))
    assert main(["model", "tiny", "--output", str(tmp_path / "y"), "--arch", "llama"]) == 1
    (tmp_path / "smol").mkdir()
    (tmp_path / "smol" / "config.json").write_text('{"model_type": "smolvlm"}')
    monkeypatch.setitem(sys.modules, "num2words", None)   # as if not installed
    with pytest.raises(MissingDependency, match=r"pip install 'egt\[families\]'"):
        check_dependencies(tmp_path / "smol")
    check_dependencies(tiny_model_dir)   # Qwen2-VL needs nothing extra


def test_gpu_benchmark_script_builds_the_published_configurations():
    """benchmarks/gpu_families.py: its arguments parse and its published configs have the published sizes."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "gpu_families.py"
    spec = importlib.util.spec_from_file_location("gpu_families", path)
    script = importlib.util.module_from_spec(spec)
    sys.modules["gpu_families"] = script   # its dataclasses look their module up while the class is made
    spec.loader.exec_module(script)
    ids = {k: i for i, k in enumerate(("bos_token_id", "eos_token_id", "pad_token_id", "image_token_id",
                                       "video_token_id", "vision_start_token_id", "vision_end_token_id"))}
    import transformers

    for arch, billions in (("qwen2_5_vl", 8.29), ("qwen3_vl", 8.77)):
        config = script.published_config(arch, ids, dry_run=False)
        with torch.device("meta"):
            model = getattr(transformers, FAMILIES[arch].model_class)._from_config(config)
        assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)
        tiny = script.published_config(arch, ids, dry_run=True)
        assert tiny.get_text_config().vocab_size == config.get_text_config().vocab_size
        assert tiny.image_token_id == ids["image_token_id"]
    if not torch.cuda.is_available():   # without a GPU the full run refuses in one line
        assert script.main(["--family", "qwen3_vl"]) == 2
