"""egt.model.training: the setup `egt sft` and `egt rl` share (LoRA targets, freezing, precision, resume, reload)."""

import re

import pytest
import torch

from egt.core.errors import ConfigError
from egt.model.training import (
    LANGUAGE_LORA_TARGETS,
    TRAIN_SUMMARY,
    ResumeMixin,
    checkpoint_complete,
    freeze_vision,
    last_checkpoint,
    lora_target_regex,
    resolve_precision,
    resolve_resume,
    torch_dtype,
)

# Module names of Qwen2.5-VL: its vision blocks also have gate/up/down_proj.
QWEN25_VL_MODULES = [
    "model.visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.proj", "model.visual.blocks.0.mlp.gate_proj",
    "model.visual.blocks.0.mlp.up_proj", "model.visual.blocks.0.mlp.down_proj", "model.visual.merger.mlp.0",
    "model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.0.self_attn.o_proj",
    "model.language_model.layers.0.mlp.gate_proj", "model.language_model.layers.0.mlp.down_proj", "lm_head",
]


def test_lora_targets_the_language_model_only():
    targets = [m for m in QWEN25_VL_MODULES if re.fullmatch(lora_target_regex(LANGUAGE_LORA_TARGETS), m)]
    assert targets == ["model.language_model.layers.0.self_attn.q_proj",
                       "model.language_model.layers.0.self_attn.o_proj",
                       "model.language_model.layers.0.mlp.gate_proj", "model.language_model.layers.0.mlp.down_proj"]
    # a user's regex is kept, but still never reaches the vision tower
    user = lora_target_regex(r".*\.(gate_proj|up_proj)")
    assert [m for m in QWEN25_VL_MODULES if re.fullmatch(user, m)] == ["model.language_model.layers.0.mlp.gate_proj"]


def test_freeze_vision_tower_and_merger(tiny_model_dir):
    from egt.model.loading import load_judge

    def frozen_names(tower, merger):
        model, _ = load_judge(tiny_model_dir)
        count = freeze_vision(model, tower=tower, merger=merger)
        names = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert count == sum(p.numel() for n, p in model.named_parameters() if n in names)
        return names

    tower = frozen_names(True, False)
    both = frozen_names(True, True)
    assert tower and all(".visual." in f".{n}" and ".merger." not in n for n in tower)
    assert both - tower and all(".merger." in n for n in both - tower)
    assert not any("language_model" in n or "lm_head" in n for n in both)
    assert frozen_names(False, False) == set()


def test_precision_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    assert resolve_precision("auto") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", use_cpu=True) == "fp32"
    assert torch_dtype("bf16") is torch.bfloat16 and torch_dtype("fp32") is torch.float32
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8")


def test_resume_picks_the_last_complete_checkpoint_and_removes_incomplete_ones(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    assert last_checkpoint(checkpoints) is None and resolve_resume("auto", checkpoints) is None
    # checkpoint-12: killed before its trainer_state.json (the Trainer's last file); checkpoint-14: killed
    # while writing it (cut off); checkpoint-16: a state of another step (a folder renamed by hand)
    states = {2: '{"global_step": 2}', 10: '{"global_step": 10}', 12: None, 14: '{"global_step": 1', 16: '{"global_step": 3}'}
    for step, state in states.items():
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (checkpoints / "checkpoint-x").mkdir()
    assert [checkpoint_complete(checkpoints / f"checkpoint-{s}") for s in states] == [True, True, False, False, False]
    assert last_checkpoint(checkpoints) == checkpoints / "checkpoint-10"        # 10 > 2 numerically
    assert resolve_resume("auto", checkpoints, clean=False) == checkpoints / "checkpoint-10"
    assert (checkpoints / "checkpoint-12").exists()                             # clean=False: other ranks
    assert resolve_resume("auto", checkpoints) == checkpoints / "checkpoint-10"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-10", "checkpoint-2", "checkpoint-x"]
    assert resolve_resume("never", checkpoints) is None
    assert resolve_resume(str(checkpoints / "checkpoint-2"), checkpoints) == checkpoints / "checkpoint-2"
    with pytest.raises(ConfigError, match="checkpoint-12 is not a Trainer checkpoint"):
        resolve_resume(str(checkpoints / "checkpoint-12"), checkpoints)
    (checkpoints / "checkpoint-14").mkdir()
    (checkpoints / "checkpoint-14" / "trainer_state.json").write_text('{"global_st')
    with pytest.raises(ConfigError, match="checkpoint-14 is an incomplete checkpoint"):
        resolve_resume(str(checkpoints / "checkpoint-14"), checkpoints)
    assert TRAIN_SUMMARY == "train_summary.json"


def test_checkpoint_reload_restores_every_weight(tiny_model_dir, tmp_path):
    from transformers import Trainer, TrainingArguments

    from egt.model.loading import load_judge

    checkpoint, _ = load_judge(tiny_model_dir)
    with torch.no_grad():
        for p in checkpoint.parameters():
            p.add_(0.5)
    checkpoint.save_pretrained(tmp_path / "checkpoint-1")
    model, _ = load_judge(tiny_model_dir)

    class ReloadingTrainer(ResumeMixin, Trainer):
        pass

    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    ReloadingTrainer(model=model, args=args)._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    expected = checkpoint.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
