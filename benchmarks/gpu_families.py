"""7B/8B-scale families on one GPU: one LoRA SFT step, K=4 scoring of 32 pairs, one GRPO step, in bf16.

    python benchmarks/gpu_families.py                       # one GPU with >= 80 GB (H100/H200), ~10 minutes
    python benchmarks/gpu_families.py --families qwen3_vl   # one family
    python benchmarks/gpu_families.py --dry-run             # the same code path on CPU at tiny widths (~1 min)

For each family a model is randomly initialised from its PUBLISHED configuration, written out below
as dicts (Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen3-VL-8B-Instruct config.json; nothing is
downloaded), saved in bf16 with the processor of egt's tiny judge of that family (the tiny tokenizer,
whose special-token ids are written into the config, and the family's real image processor: 14-px
patches for Qwen2.5-VL, 16-px for Qwen3-VL, images resized to --image-px), and run through egt's
own stages, each in this process:

1. `egt sft` with LoRA (r 16 on the language model's projections, merged at the end), one optimizer
   step of --sft-batch oracle traces, gradient checkpointing, bf16;
2. `egt score`, K = 4 sampled judgements of each of 32 pairs, --max-new-tokens each, full-vocabulary
   entropy at every token;
3. `egt rl`, one GRPO step (LoRA, --rl-pairs pairs x 4 completions, bf16, gradient checkpointing).

A random model never writes eos, so every judgement runs to --max-new-tokens (the most expensive
case); the texts are irrelevant here. Prints a Markdown table -- per family and stage: wall time,
tokens/s (SFT: tokens trained; score and GRPO: tokens generated) and peak GPU memory
(torch.cuda.max_memory_allocated, reset before each stage) -- and the command that reproduces it.

--dry-run keeps every structural value of the published configs (layer pattern, vocabulary,
rotary sections, vision layout) but shrinks the widths and depths, and runs the stages on CPU in
fp32 with 4 pairs and 8 new tokens, so the script's code path is checked without a GPU.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

try:  # run from a checkout without `pip install -e .`
    import egt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# Qwen/Qwen2.5-VL-7B-Instruct config.json: the published values, written out once in gpu_scoring.py
# (token ids are replaced by the tiny tokenizer's below).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_scoring import QWEN25_VL_7B as QWEN2_5_VL_7B  # noqa: E402

# Qwen/Qwen3-VL-8B-Instruct config.json (published values; token ids are replaced by the tiny tokenizer's).
QWEN3_VL_8B = {
    "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "tie_word_embeddings": False,
    "text_config": {
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 12288, "max_position_embeddings": 262144, "model_type": "qwen3_vl_text",
        "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000, "use_cache": True, "vocab_size": 151936,
    },
    "vision_config": {
        "deepstack_visual_indexes": [8, 16, 24], "depth": 27, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152, "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 4304,
        "model_type": "qwen3_vl", "num_heads": 16, "num_position_embeddings": 2304, "out_hidden_size": 4096,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
    },
}

PUBLISHED = {"qwen2_5_vl": ("Qwen/Qwen2.5-VL-7B-Instruct", QWEN2_5_VL_7B),
             "qwen3_vl": ("Qwen/Qwen3-VL-8B-Instruct", QWEN3_VL_8B)}

# --dry-run: the same structure, tiny widths (head_dim 16 = 2 * sum(mrope_section)).
DRY_RUN = {
    "qwen2_5_vl": ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "max_window_layers": 2,
                    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
                   {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                    "fullatt_block_indexes": [1]}),
    "qwen3_vl": ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16,
                  "rope_scaling": {"mrope_interleaved": True, "mrope_section": [2, 3, 3], "rope_type": "default"}},
                 {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                  "deepstack_visual_indexes": [0], "num_position_embeddings": 64}),
}
PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}


def published_config(arch: str, token_ids: dict, dry_run: bool):
    """The family's published config (tiny widths when dry_run) with the tiny tokenizer's token ids."""
    from transformers import AutoConfig

    values = copy.deepcopy(PUBLISHED[arch][1])
    text = values.get("text_config", values)   # Qwen2.5-VL keeps its text values at the top level
    text.update({k: token_ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    values.update({k: token_ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                             "vision_end_token_id")})
    if dry_run:
        text_sizes, vision_sizes = copy.deepcopy(DRY_RUN[arch])
        text.update(text_sizes)
        values["vision_config"].update(vision_sizes)
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)


def build_model_dir(arch: str, out: Path, image_px: int, dry_run: bool, dtype) -> Path:
    """A randomly initialised model of the published config + a processor, saved like a hub checkpoint."""
    import torch
    import transformers
    from transformers import GenerationConfig, Qwen2VLImageProcessor

    from egt.model.families import get_family
    from egt.tiny.families import TinyConfig, build

    tiny = build(TinyConfig(output=out.parent / f"tiny_{arch}", arch=arch, corpus_pairs=200, pretrain_steps=0))
    processor = transformers.AutoProcessor.from_pretrained(tiny)
    tok = processor.tokenizer
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<|endoftext|>"),
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    pixels = image_px * image_px
    processor.image_processor = Qwen2VLImageProcessor(patch_size=PATCH[arch], merge_size=2, temporal_patch_size=2,
                                                      size={"shortest_edge": pixels, "longest_edge": pixels})
    config = published_config(arch, ids, dry_run)
    torch.manual_seed(0)
    model_class = getattr(transformers, get_family(arch).model_class)
    device = "cpu" if dry_run else "cuda"
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"])
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    _free()
    print(f"{arch}: {n_params / 1e9:.2f}B parameters, vocabulary {config.get_text_config().vocab_size}, "
          f"saved to {out}", flush=True)
    return out


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _measure(stage):
    """Run `stage()`; return (its result, wall seconds, peak GPU GiB or None on CPU)."""
    import torch

    _free()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = stage()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    _free()
    return result, seconds, peak


def run_family(arch: str, root: Path, args, data: dict) -> list[tuple]:
    """The three stages on one family; rows (family, stage, seconds, tokens, tokens/s, peak GiB)."""
    import torch

    from egt.stages import rl, score, sft

    dtype = torch.float32 if args.dry_run else torch.bfloat16
    model_dir = build_model_dir(arch, root / arch / "base", args.image_px, args.dry_run, dtype)
    precision = "fp32" if args.dry_run else "bf16"
    rows = []

    def sft_stage():
        return sft.run(sft.Config(
            traces=data["traces"], model=str(model_dir), output=root / arch / "sft", lora=True, lora_r=16,
            max_steps=1, per_device_train_batch_size=args.sft_batch, learning_rate=1e-4, warmup_steps=0.0,
            precision=precision, gradient_checkpointing=True, logging_steps=1, save_steps=1000, progress=False))

    out, seconds, peak = _measure(sft_stage)
    summary = json.loads((out / "train_summary.json").read_text())
    tokens = max((h.get("num_tokens", 0) for h in summary["log_history"]), default=0)
    rows.append((arch, "SFT, LoRA, 1 step", seconds, tokens, tokens / summary["train_wall_s"], peak))
    sft_model = out / "model"

    def score_stage():
        return score.run(score.Config(
            model=str(sft_model), pairs=data["pool"], output=root / arch / "score", samples=4,
            max_new_tokens=args.max_new_tokens, batch_size=args.score_batch, shard_size=64,
            dtype="float32" if args.dry_run else "bfloat16", device="cpu" if args.dry_run else "auto",
            progress=False))

    out, seconds, peak = _measure(score_stage)
    summary = json.loads((out / "summary.json").read_text())
    rows.append((arch, f"score, K=4 x {summary['pairs']} pairs", seconds, summary["generated_tokens"],
                 summary["tokens_per_s"], peak))

    def rl_stage():
        return rl.run(rl.Config(
            model=sft_model, train=data["pool"], output=root / arch / "rl", max_steps=1, num_generations=4,
            per_device_train_batch_size=4 * args.rl_pairs, max_completion_length=args.max_new_tokens,
            learning_rate=1e-5, lora=True, gradient_checkpointing=True, bf16=not args.dry_run, save_steps=1000,
            grpo_extra={"use_cpu": True} if args.dry_run else {}))

    out, seconds, peak = _measure(rl_stage)
    summary = json.loads((out / "train_summary.json").read_text())
    tokens = 4 * args.rl_pairs * args.max_new_tokens   # a random model never stops early
    rows.append((arch, f"GRPO, LoRA, 1 step ({args.rl_pairs} pairs x 4)", seconds, tokens,
                 tokens / summary["train_wall_s"], peak))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=sorted(PUBLISHED), default=sorted(PUBLISHED))
    parser.add_argument("--pairs", type=int, default=32, help="pairs scored (K = 4 each)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--image-px", type=int, default=448, help="images are resized to this square size")
    parser.add_argument("--sft-batch", type=int, default=8, help="traces in the one SFT step")
    parser.add_argument("--score-batch", type=int, default=64, help="judgements per generate call")
    parser.add_argument("--rl-pairs", type=int, default=2, help="pairs in the one GRPO step (4 completions each)")
    parser.add_argument("--dry-run", action="store_true", help="tiny widths on CPU (checks the code path)")
    args = parser.parse_args(argv)

    import torch

    if args.dry_run:
        args.pairs, args.max_new_tokens, args.image_px = min(args.pairs, 4), min(args.max_new_tokens, 8), 56
        args.sft_batch, args.score_batch, args.rl_pairs = min(args.sft_batch, 2), min(args.score_batch, 8), 1
    elif not torch.cuda.is_available():
        print("error: gpu_families.py needs a CUDA GPU and found none (--dry-run checks the code path on CPU)",
              file=sys.stderr)
        return 2

    from egt.core.records import read_pairs, write_pairs
    from egt.data import synth
    from egt.stages import distill

    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="egt-gpu-families-") as tmp:
        root = Path(tmp)
        train = synth.run(synth.Config(split="train", n=max(args.sft_batch, 2), seed=1, output=root / "train.parquet"))
        traces = distill.run(distill.Config(pairs=train, output=root / "distill", backend="oracle",
                                            oracle_wrong_rate=0.0, progress=False)) / "traces.parquet"
        pool_pairs = read_pairs(synth.run(synth.Config(split="pool", n=args.pairs, seed=2,
                                                       output=root / "pool.parquet")))
        for i, pair in enumerate(pool_pairs):
            pair.extra["order"] = i
        data = {"traces": traces, "pool": write_pairs(pool_pairs, root / "selected.parquet")}
        for arch in args.families:
            rows += run_family(arch, root, args, data)

    where = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run \
        else "CPU dry run (tiny widths, fp32)"
    print(f"\nRandom-init published configs, {where}; {args.image_px}px images, {args.max_new_tokens} new tokens "
          f"per judgement (a random model never stops early)\n")
    print("| family | stage | wall s | tokens | tokens/s | peak GiB |")
    print("|---|---|---:|---:|---:|---:|")
    for arch, stage, seconds, tokens, rate, peak in rows:
        peak_text = "—" if peak is None else f"{peak:.1f}"
        print(f"| {PUBLISHED[arch][0]} | {stage} | {seconds:.1f} | {tokens} | {rate:.0f} | {peak_text} |")
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Reproduce: python benchmarks/gpu_families.py "
          f"--families {' '.join(args.families)} --pairs {args.pairs} --max-new-tokens {args.max_new_tokens} "
          f"--image-px {args.image_px} --sft-batch {args.sft_batch} --score-batch {args.score_batch} "
          f"--rl-pairs {args.rl_pairs}" + (" --dry-run" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
