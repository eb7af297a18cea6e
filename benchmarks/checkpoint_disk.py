"""Disk a shipped training config needs for its checkpoints, computed from the model's size (nothing runs).

    python benchmarks/checkpoint_disk.py            # the table of docs/scale.md and each YAML's `# Disk:` line

The parameters of Qwen/Qwen2.5-VL-7B-Instruct are counted from its published config (benchmarks/gpu_scoring.py)
on the meta device: all of them, the vision tower, the merger, and a LoRA adapter on the language model's
projections. Per checkpoint (bytes per parameter; P all parameters, T trainable, F frozen, L LoRA):

- full fine-tuning under DeepSpeed ZeRO-3 (configs/accelerate/zero3_8gpu.yaml): the optimizer states of every
  trainable parameter -- fp32 master weight and AdamW's two moments, 12 T -- the frozen parameters in bf16, 2 F,
  and the 16-bit model.safetensors the Trainer gathers with each checkpoint (configs/deepspeed/zero3.json:
  stage3_gather_16bit_weights_on_model_save), 2 P;
- LoRA on one GPU: the adapter in fp32 and its two AdamW moments, 12 L.

A run keeps `save_total_limit` checkpoints, then writes model/ (2 P, bf16; LoRA: merged, plus the adapter). The
commands' other outputs (scores, traces, logs) are small beside these. Computed, not measured: a real
checkpoint adds the scheduler, RNG states and the trainer state (kilobytes) and the file-system's rounding.
GB here are 10^9 bytes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_scoring import QWEN25_VL_7B  # noqa: E402

CONFIGS = ROOT / "configs" / "qwen2.5-vl-7b"
MARKER = "# Disk:"


def parameter_counts(lora_r: int, lora_targets: list[str]) -> dict[str, int]:
    """{all, tower, projector, language, lora} parameters of Qwen2.5-VL-7B-Instruct (meta device)."""
    import torch
    import transformers

    from egt.model.families import get_family, vision_part

    family = get_family("qwen2_5_vl")
    values = dict(QWEN25_VL_7B)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = getattr(transformers, family.model_class)._from_config(config)
    counts = {"all": 0, "tower": 0, "projector": 0, "language": 0, "lora": 0}
    for name, param in model.named_parameters():
        counts["all"] += param.numel()
        counts[vision_part(family, name) or "language"] += param.numel()
    counts["lora"] = sum(lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora_targets
                         and vision_part(family, name) is None)
    return counts


def checkpoint_disk(cfg: dict) -> dict | None:
    """Bytes per checkpoint, kept checkpoints, model/ and the total for a stage config; None: no checkpoints."""
    from egt.model.training import LANGUAGE_LORA_TARGETS

    if "save_total_limit" not in cfg and "save_steps" not in cfg:
        return None
    lora = bool(cfg.get("lora"))
    counts = parameter_counts(int(cfg.get("lora_r", 16)), list(cfg.get("lora_target_modules") or LANGUAGE_LORA_TARGETS))
    if "freeze_vision" in cfg:   # egt rl: tower and merger together
        frozen = counts["tower"] + counts["projector"] if cfg["freeze_vision"] else 0
    else:                        # egt sft
        frozen = counts["tower"] * bool(cfg.get("freeze_vision_tower", True)) + \
            counts["projector"] * bool(cfg.get("freeze_merger", False))
    if lora:
        per_checkpoint = 12 * counts["lora"]
        how = f"LoRA r {cfg.get('lora_r', 16)}: adapter + AdamW, 12 B x {counts['lora'] / 1e6:.0f}M"
        final = 2 * counts["all"] + 4 * counts["lora"]
    else:
        trainable = counts["all"] - frozen
        per_checkpoint = 12 * trainable + 2 * frozen + 2 * counts["all"]
        how = (f"ZeRO-3: 12 B x {trainable / 1e9:.2f}B trainable + 2 B x {frozen / 1e9:.2f}B frozen "
               f"+ 2 B x {counts['all'] / 1e9:.2f}B gathered weights")
        final = 2 * counts["all"]
    limit = cfg.get("save_total_limit")
    kept = per_checkpoint * (limit if limit is not None else 1)
    return {"per_checkpoint": per_checkpoint, "limit": limit, "final": final, "total": kept + final, "how": how}


def comment(disk: dict | None) -> str:
    if disk is None:
        return f"{MARKER} no checkpoints (its outputs are small)."
    limit = "unlimited: every save_steps" if disk["limit"] is None else f"save_total_limit {disk['limit']}"
    return (f"{MARKER} each checkpoint {disk['per_checkpoint'] / 1e9:.1f} GB ({disk['how']}); {limit}, "
            f"+ model/ {disk['final'] / 1e9:.1f} GB = {disk['total'] / 1e9:.0f} GB (benchmarks/checkpoint_disk.py)")


def rows() -> list[tuple[str, dict | None]]:
    return [(path.name, checkpoint_disk(yaml.safe_load(path.read_text()) or {})) for path in sorted(CONFIGS.glob("*.yaml"))]


def yaml_comment_lines() -> dict[str, list[str]]:
    """The `# Disk:` lines each shipped YAML holds now."""
    return {path.name: [line for line in path.read_text().splitlines() if line.startswith(MARKER)]
            for path in sorted(CONFIGS.glob("*.yaml"))}


def main() -> int:
    print("Checkpoint disk of the shipped Qwen2.5-VL-7B configs (computed from the parameter counts; GB = 1e9 B)\n")
    print("| config | per checkpoint, GB | kept | model/, GB | total, GB | what a checkpoint holds |")
    print("|---|---:|---:|---:|---:|---|")
    for name, disk in rows():
        if disk is None:
            print(f"| {name} | — | — | — | — | no checkpoints |")
            continue
        kept = "all" if disk["limit"] is None else disk["limit"]
        print(f"| {name} | {disk['per_checkpoint'] / 1e9:.1f} | {kept} | {disk['final'] / 1e9:.1f} | "
              f"{disk['total'] / 1e9:.0f} | {disk['how']} |")
    stale = [name for name, disk in rows() if yaml_comment_lines()[name] != [comment(disk)]]
    print(f"\nYAML `{MARKER}` lines up to date: {'yes' if not stale else 'no: ' + ', '.join(stale)}")
    print("Reproduce: python benchmarks/checkpoint_disk.py")
    if "--write" in sys.argv:   # rewrite each YAML's `# Disk:` line (after its header comment)
        for name, disk in rows():
            path = CONFIGS / name
            lines = [line for line in path.read_text().splitlines() if not line.startswith(MARKER)]
            header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
            lines.insert(header, comment(disk))
            path.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
