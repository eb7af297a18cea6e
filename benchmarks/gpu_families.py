"""7B/8B-scale families on one GPU, one family per call: one LoRA SFT step, K=4 scoring of 32 pairs, one GRPO step.

    python benchmarks/gpu_families.py --family qwen2_5_vl            # one H100/H200 (>= 80 GB), <= 8 minutes
    python benchmarks/gpu_families.py --family qwen3_vl
    python benchmarks/gpu_families.py --family qwen2_5_vl --plan     # the stages, budgets and disk needs; runs nothing
    python benchmarks/gpu_families.py --family qwen2_5_vl --dry-run  # the same code path on CPU at tiny widths

For the family a model is randomly initialised from its PUBLISHED configuration, written out below
as dicts (Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen3-VL-8B-Instruct config.json; nothing is
downloaded), saved in bf16 with the processor of egt's tiny judge of that family (the tiny tokenizer,
whose special-token ids are written into the config, and the family's real image processor: 14-px
patches for Qwen2.5-VL, 16-px for Qwen3-VL, images resized to --image-px), and run through egt's
own stages, each in a child process of its own with a time budget:

| stage | budget | what it does | writes | removed when it is done |
|---|---:|---|---|---|
| build | 60 s | random init on the GPU, save | base/ (1 model) | - |
| sft | 150 s | `egt sft` LoRA r 16, one step of --sft-batch traces, merge | sft/model (1 model), sft/adapter | base/ |
| score | 90 s | `egt score` K = 4 x --pairs pairs, --max-new-tokens each | score/ (KB) | score/ |
| rl | 150 s | `egt rl` one GRPO step, LoRA, --rl-pairs pairs x 4, merge | rl/model (1 model), rl/adapter | rl/, sft/ |

The budgets add up to 450 s (7.5 min; the rest of the 8 minutes is data preparation and start-up); a
stage that runs past its budget is killed (its folders removed, the stages after it skipped) and the
table says so. At most two models are on disk at once (sft writing its merged model next to base; rl next
to sft's): before anything starts, the scratch folder's free space (shutil.disk_usage) is checked
against that peak (plus 10% and 2 GiB of slack) and the run is refused with the numbers when it does not
fit. Qwen2.5-VL-7B (8.29B parameters, 15.4 GiB in bf16) needs 36.3 GiB, Qwen3-VL-8B (8.77B, 16.3 GiB)
38.3 GiB (`--plan` prints the table): one family fits the 64 GiB disk of a one-GPU machine; both families'
folders kept to the end, as before, came to ~100 GB.

A random model never writes eos, so every judgement runs to --max-new-tokens (the most expensive
case); the texts are irrelevant here. Prints a Markdown table -- per stage: wall time, tokens/s (SFT:
tokens trained; score and GRPO: tokens generated) and peak GPU memory (torch.cuda.max_memory_allocated
of the stage's process) -- and the command that reproduces it.

--dry-run keeps every structural value of the published configs (layer pattern, vocabulary,
rotary sections, vision layout) but shrinks the widths and depths, and runs the stages on CPU in
fp32 with 4 pairs and 8 new tokens (budgets of 300 s per stage there: 2 CPU cores are slower than a
GPU), so the script's code path, the clean-up and the disk arithmetic are checked without a GPU
(tests/benchmarks/test_gpu_families.py).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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




# ---------------------------------------------------------------- the plan: stages, budgets, disk

GIB = 2 ** 30
SLACK_BYTES = 2 * GIB          # logs, the synthetic data, the tiny tokenizer's folder, Python caches
SLACK_FRACTION = 0.10          # safetensors headers, processor files, file-system rounding
LORA_R = 16


@dataclass(frozen=True)
class Stage:
    name: str
    budget_s: int                  # on one H100/H200; --dry-run uses DRY_RUN_BUDGET_S
    writes: tuple[str, ...]        # folders under the work folder ("model" = one model's weights)
    removes: tuple[str, ...]       # folders removed as soon as the stage is done


STAGES = (
    Stage("build", 60, ("base",), ()),
    Stage("sft", 150, ("sft/model", "sft/adapter"), ("base",)),
    Stage("score", 90, ("score",), ("score",)),
    Stage("rl", 150, ("rl/model", "rl/adapter"), ("rl", "sft")),
)
DRY_RUN_BUDGET_S = 300
CALL_BUDGET_S = 480            # one call, data preparation and start-up included


def parameter_counts(arch: str, dry_run: bool) -> tuple[int, int]:
    """(model parameters, LoRA r 16 adapter parameters) of the family's published config, counted on the meta
    device (nothing is allocated)."""
    import torch
    import transformers

    from egt.model.families import get_family, vision_part
    from egt.model.training import LANGUAGE_LORA_TARGETS

    values = PUBLISHED[arch][1]
    text = values.get("text_config", values)
    ids = {k: text.get(k, values.get(k)) for k in ("bos_token_id", "eos_token_id")}
    ids["pad_token_id"] = ids["bos_token_id"]
    ids.update({k: values[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                       "vision_end_token_id")})
    family = get_family(arch)
    with torch.device("meta"):
        model = getattr(transformers, family.model_class)._from_config(published_config(arch, ids, dry_run))
    total = sum(p.numel() for p in model.parameters())
    lora = sum(LORA_R * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LANGUAGE_LORA_TARGETS
               and vision_part(family, name) is None)
    return total, lora


def disk_plan(arch: str, dry_run: bool) -> dict:
    """What each stage leaves on disk and the peak, in bytes: models in bf16 (fp32 when dry_run), adapters fp32."""
    params, lora = parameter_counts(arch, dry_run)
    model_bytes = params * (4 if dry_run else 2)
    sizes = {"base": model_bytes, "sft/model": model_bytes, "sft/adapter": lora * 4, "score": 0,
             "rl/model": model_bytes, "rl/adapter": lora * 4}
    on_disk: dict[str, int] = {}
    steps, peak = [], 0
    for stage in STAGES:
        on_disk.update({folder: sizes[folder] for folder in stage.writes})
        during = sum(on_disk.values())
        peak = max(peak, during)
        for gone in stage.removes:
            for folder in [f for f in on_disk if f == gone or f.startswith(gone + "/")]:
                del on_disk[folder]
        steps.append({"stage": stage.name, "during_bytes": during, "after_bytes": sum(on_disk.values())})
    need = int(peak * (1 + SLACK_FRACTION)) + SLACK_BYTES
    return {"arch": arch, "parameters": params, "lora_parameters": lora, "model_bytes": model_bytes,
            "steps": steps, "peak_bytes": peak, "need_bytes": need}


def check_disk(plan: dict, scratch: Path, free_bytes: int | None = None) -> str | None:
    """None when `scratch` has room for the plan's peak, else why not (with the numbers)."""
    free = shutil.disk_usage(scratch).free if free_bytes is None else free_bytes
    if free >= plan["need_bytes"]:
        return None
    return (f"{scratch} has {free / GIB:.1f} GiB free, but {PUBLISHED[plan['arch']][0]} needs "
            f"{plan['need_bytes'] / GIB:.1f} GiB: a peak of {plan['peak_bytes'] / GIB:.1f} GiB (two "
            f"{plan['model_bytes'] / GIB:.1f} GiB models while a stage writes its merged model next to the one it "
            f"started from) + {SLACK_FRACTION:.0%} + {SLACK_BYTES / GIB:.0f} GiB; give --scratch on a larger disk")


def plan_table(plan: dict, dry_run: bool) -> str:
    lines = [f"{PUBLISHED[plan['arch']][0]}: {plan['parameters'] / 1e9:.2f}B parameters, one model "
             f"{plan['model_bytes'] / GIB:.2f} GiB ({'fp32, dry run' if dry_run else 'bf16'}), LoRA adapter "
             f"{plan['lora_parameters'] * 4 / GIB:.2f} GiB; peak {plan['peak_bytes'] / GIB:.2f} GiB, "
             f"needs {plan['need_bytes'] / GIB:.2f} GiB free", "",
             "| stage | budget s | on disk during, GiB | after, GiB | removed after |", "|---|---:|---:|---:|---|"]
    for stage, step in zip(STAGES, plan["steps"]):
        budget = DRY_RUN_BUDGET_S if dry_run else stage.budget_s
        lines.append(f"| {stage.name} | {budget} | {step['during_bytes'] / GIB:.2f} | {step['after_bytes'] / GIB:.2f} "
                     f"| {', '.join(stage.removes) or '-'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- one stage (a child process)

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
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    return result, seconds, peak


def run_stage(name: str, work: Path, args) -> dict:
    """One stage in this process; returns {label, seconds, tokens, rate, peak_gib} (also written to <stage>.json)."""
    import torch

    from egt.stages import rl, score, sft

    arch, dry_run = args.family, args.dry_run
    data = json.loads((work / "data.json").read_text())
    precision = "fp32" if dry_run else "bf16"
    if name == "build":
        dtype = torch.float32 if dry_run else torch.bfloat16
        _, seconds, peak = _measure(lambda: build_model_dir(arch, work / "base", args.image_px, dry_run, dtype))
        result = {"label": "build, random init + save", "seconds": seconds, "tokens": 0, "rate": None, "peak_gib": peak}
    elif name == "sft":
        out, seconds, peak = _measure(lambda: sft.run(sft.Config(
            traces=data["traces"], model=str(work / "base"), output=work / "sft", lora=True, lora_r=LORA_R,
            max_steps=1, per_device_train_batch_size=args.sft_batch, learning_rate=1e-4, warmup_steps=0.0,
            precision=precision, gradient_checkpointing=True, logging_steps=1, save_steps=1000, progress=False)))
        summary = json.loads((out / "train_summary.json").read_text())
        tokens = max((h.get("num_tokens", 0) for h in summary["log_history"]), default=0)
        result = {"label": "SFT, LoRA, 1 step", "seconds": seconds, "tokens": tokens,
                  "rate": tokens / summary["train_wall_s"], "peak_gib": peak}
    elif name == "score":
        out, seconds, peak = _measure(lambda: score.run(score.Config(
            model=str(work / "sft" / "model"), pairs=data["pool"], output=work / "score", samples=4,
            max_new_tokens=args.max_new_tokens, batch_size=args.score_batch, shard_size=64,
            dtype="float32" if dry_run else "bfloat16", device="cpu" if dry_run else "auto", progress=False)))
        summary = json.loads((out / "summary.json").read_text())
        result = {"label": f"score, K=4 x {summary['pairs']} pairs", "seconds": seconds,
                  "tokens": summary["generated_tokens"], "rate": summary["tokens_per_s"], "peak_gib": peak}
    elif name == "rl":
        out, seconds, peak = _measure(lambda: rl.run(rl.Config(
            model=work / "sft" / "model", train=data["pool"], output=work / "rl", max_steps=1, num_generations=4,
            per_device_train_batch_size=4 * args.rl_pairs, max_completion_length=args.max_new_tokens,
            learning_rate=1e-5, lora=True, lora_r=LORA_R, gradient_checkpointing=True, bf16=not dry_run,
            save_steps=1000, both_orders=False, grpo_extra={"use_cpu": True} if dry_run else {})))
        summary = json.loads((out / "train_summary.json").read_text())
        tokens = 4 * args.rl_pairs * args.max_new_tokens   # a random model never stops early
        result = {"label": f"GRPO, LoRA, 1 step ({args.rl_pairs} pairs x 4)", "seconds": seconds, "tokens": tokens,
                  "rate": tokens / summary["train_wall_s"], "peak_gib": peak}
    else:
        raise ValueError(f"unknown stage {name!r}")
    (work / f"{name}.json").write_text(json.dumps(result))
    return result


# ---------------------------------------------------------------- the call: plan, check, stages, clean-up

def prepare_data(work: Path, args) -> None:
    from egt.core.records import read_pairs, write_pairs
    from egt.data import synth
    from egt.stages import distill

    train = synth.run(synth.Config(split="train", n=max(args.sft_batch, 2), seed=1, output=work / "train.parquet"))
    traces = distill.run(distill.Config(pairs=train, output=work / "distill", backend="oracle",
                                        oracle_wrong_rate=0.0, progress=False)) / "traces.parquet"
    pool = read_pairs(synth.run(synth.Config(split="pool", n=args.pairs, seed=2, output=work / "pool.parquet")))
    for i, pair in enumerate(pool):
        pair.extra["order"] = i
    selected = write_pairs(pool, work / "selected.parquet")
    (work / "data.json").write_text(json.dumps({"traces": str(traces), "pool": str(selected)}))


def remove(work: Path, folders: tuple[str, ...]) -> None:
    for folder in folders:
        shutil.rmtree(work / folder, ignore_errors=True)


def stage_command(name: str, work: Path, args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--family", args.family, "--stage", name,
            "--work", str(work), "--pairs", str(args.pairs), "--max-new-tokens", str(args.max_new_tokens),
            "--image-px", str(args.image_px), "--sft-batch", str(args.sft_batch), "--score-batch",
            str(args.score_batch), "--rl-pairs", str(args.rl_pairs)] + (["--dry-run"] if args.dry_run else [])


def run_call(args) -> tuple[list[tuple], str | None]:
    """Every stage of one family, each in its own process under its budget; (rows, why it stopped or None)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"egt-gpu-{args.family}-", dir=args.scratch) as tmp:
        work = Path(tmp)
        prepare_data(work, args)
        for stage in STAGES:
            budget = DRY_RUN_BUDGET_S if args.dry_run else stage.budget_s
            log = work / f"{stage.name}.log"
            with open(log, "w") as handle:
                try:
                    done = subprocess.run(stage_command(stage.name, work, args), stdout=handle,
                                          stderr=subprocess.STDOUT, timeout=budget)
                except subprocess.TimeoutExpired:
                    done = None
            if done is None or done.returncode != 0:
                why = f"{stage.name}: past its {budget} s budget (killed)" if done is None else \
                    f"{stage.name}: exit {done.returncode}; last lines:\n{log.read_text(errors='replace')[-3000:]}"
                return rows, why
            result = json.loads((work / f"{stage.name}.json").read_text())
            rows.append((stage.name, result, budget))
            remove(work, stage.removes)
            print(f"{args.family}: {stage.name} done in {result['seconds']:.1f} s (budget {budget} s)", flush=True)
    return rows, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(PUBLISHED), help="one family per call")
    parser.add_argument("--pairs", type=int, default=32, help="pairs scored (K = 4 each)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--image-px", type=int, default=448, help="images are resized to this square size")
    parser.add_argument("--sft-batch", type=int, default=8, help="traces in the one SFT step")
    parser.add_argument("--score-batch", type=int, default=64, help="judgements per generate call")
    parser.add_argument("--rl-pairs", type=int, default=2, help="pairs in the one GRPO step (4 completions each)")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the models are written (needs the plan's free space)")
    parser.add_argument("--dry-run", action="store_true", help="tiny widths on CPU (checks the code path)")
    parser.add_argument("--plan", action="store_true", help="print the stages and the disk arithmetic, run nothing")
    parser.add_argument("--stage", choices=[s.name for s in STAGES], help=argparse.SUPPRESS)   # the child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.dry_run:
        args.pairs, args.max_new_tokens, args.image_px = min(args.pairs, 4), min(args.max_new_tokens, 8), 56
        args.sft_batch, args.score_batch, args.rl_pairs = min(args.sft_batch, 2), min(args.score_batch, 8), 1
    if args.stage:
        run_stage(args.stage, args.work, args)
        return 0

    plan = disk_plan(args.family, args.dry_run)
    print(plan_table(plan, args.dry_run) + "\n", flush=True)
    if args.plan:
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: gpu_families.py needs a CUDA GPU and found none (--dry-run checks the code path on CPU)",
              file=sys.stderr)
        return 2
    args.scratch.mkdir(parents=True, exist_ok=True)
    problem = check_disk(plan, args.scratch)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    rows, stopped = run_call(args)
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run \
        else "CPU dry run (tiny widths, fp32)"
    print(f"\nRandom-init {PUBLISHED[args.family][0]}, {where}; {args.image_px}px images, {args.max_new_tokens} new "
          f"tokens per judgement (a random model never stops early)\n")
    print("| stage | what | wall s | budget s | tokens | tokens/s | peak GiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, result, budget in rows:
        rate = "—" if result["rate"] is None else f"{result['rate']:.0f}"
        peak = "—" if result["peak_gib"] is None else f"{result['peak_gib']:.1f}"
        print(f"| {name} | {result['label']} | {result['seconds']:.1f} | {budget} | {result['tokens']} | {rate} "
              f"| {peak} |")
    total = time.perf_counter() - started
    print(f"\nTotal {total:.0f} s (call budget {CALL_BUDGET_S} s). Reproduce: python benchmarks/gpu_families.py "
          f"--family {args.family} --pairs {args.pairs} --max-new-tokens {args.max_new_tokens} "
          f"--image-px {args.image_px} --sft-batch {args.sft_batch} --score-batch {args.score_batch} "
          f"--rl-pairs {args.rl_pairs}" + (" --dry-run" if args.dry_run else ""))
    if stopped is not None:
        print(f"error: stopped at {stopped}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
