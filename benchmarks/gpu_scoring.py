"""Scoring throughput at 7B scale on one GPU: tokens/s with and without entropy, peak memory.

    python benchmarks/gpu_scoring.py                    # one H100-class GPU, < 8 minutes
    python benchmarks/gpu_scoring.py --dry-run-cpu      # the same code path on CPU with a tiny config

A randomly initialised Qwen2_5_VLForConditionalGeneration with the published configuration
of Qwen/Qwen2.5-VL-7B-Instruct (config.json values written below, nothing downloaded; 8.3B
parameters, vocabulary 152064) runs in bf16 on cuda through `egt.model.generation.judge` on
synthetic pairs with images (egt.data.synth, upscaled to --image-px so an image is
(px/28)^2 visual tokens), once with entropy off and once on (same seeds, same tokens).
The tokenizer and chat template are the tiny judge's (egt.tiny.build.build_tiny); its
special-token ids are written into the config. Only the model's vocabulary size matters
for the cost of the entropy; the random model writes ids the tiny tokenizer cannot decode,
which decode to nothing (the text is irrelevant here). A random model never writes eos,
so every sequence runs to --max-new-tokens.

Prints a Markdown table (tokens/s per arm, entropy overhead, peak GPU memory) and the
command. Stops starting new batch sizes once --time-budget-s has passed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

try:  # run from a checkout without `pip install -e .`
    import egt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# Qwen/Qwen2.5-VL-7B-Instruct config.json (published values).
QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
    "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
    "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 128000,
    "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 152064,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {
        "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
        "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
        "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2, "temporal_patch_size": 2,
    },
}

# --dry-run-cpu: same structure and vocabulary, tiny widths (head_dim 16 = 2 * sum(mrope_section)).
DRY_RUN_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_window_layers": 2,
                 "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
DRY_RUN_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                  "fullatt_block_indexes": [1]}


def model_config(token_ids: dict, dry_run: bool):
    from transformers import Qwen2_5_VLConfig

    values = copy.deepcopy(QWEN25_VL_7B)
    values.update(token_ids)
    if dry_run:
        values.update(copy.deepcopy(DRY_RUN_SIZES))
        values["vision_config"].update(DRY_RUN_VISION)
    return Qwen2_5_VLConfig.from_dict(values)


def build_processor(tiny_dir: Path, image_px: int):
    """The tiny judge's tokenizer and chat template with Qwen2.5-VL's 14-px patches at image_px x image_px."""
    from transformers import AutoProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor

    tiny = AutoProcessor.from_pretrained(str(tiny_dir))
    pixels = image_px * image_px
    images = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                                   size={"shortest_edge": pixels, "longest_edge": pixels})
    return Qwen2VLProcessor(image_processor=images, tokenizer=tiny.tokenizer, video_processor=tiny.video_processor,
                            chat_template=tiny.chat_template)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--image-px", type=int, default=448, help="images are resized to this square size")
    parser.add_argument("--time-budget-s", type=float, default=360.0, help="start no new batch size after this")
    parser.add_argument("--dry-run-cpu", action="store_true", help="tiny widths on CPU: checks the code path")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import torch

    if args.dry_run_cpu:
        device, dtype = torch.device("cpu"), torch.bfloat16
        args.max_new_tokens, args.image_px = min(args.max_new_tokens, 8), min(args.image_px, 56)
    else:
        if not torch.cuda.is_available():
            print("error: gpu_scoring.py needs a CUDA GPU and found none "
                  "(run with --dry-run-cpu to check the CPU-side code path)", file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), torch.bfloat16

    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from egt.data.synth import generate_pairs
    from egt.model.generation import JudgeRequest, judge, judgement_seed
    from egt.tiny.build import SPECIAL_TOKENS, TinyConfig, build_tiny

    with tempfile.TemporaryDirectory(prefix="egt-gpu-scoring-") as tmp:
        tiny_dir = build_tiny(TinyConfig(output=Path(tmp) / "tiny", seed=0, corpus_pairs=200, pretrain_steps=0))
        processor = build_processor(tiny_dir, args.image_px)
        tok = processor.tokenizer
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        token_ids = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"], "image_token_id": ids["<|image_pad|>"],
                     "video_token_id": ids["<|video_pad|>"], "vision_start_token_id": ids["<|vision_start|>"],
                     "vision_end_token_id": ids["<|vision_end|>"]}
        config = model_config(token_ids, args.dry_run_cpu)
        built = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
        model.eval()
        model.generation_config = GenerationConfig(eos_token_id=token_ids["eos_token_id"],
                                                   pad_token_id=token_ids["pad_token_id"])
        n_params = sum(p.numel() for p in model.parameters())
        init_s = time.perf_counter() - built
        print(f"model: {n_params / 1e9:.2f}B parameters, vocab {config.text_config.vocab_size}, {dtype}, "
              f"{device}, initialised in {init_s:.0f} s", flush=True)

        pairs = generate_pairs("pool", max(args.batch_sizes), seed=0, image_dir=Path(tmp) / "images")
        visual_tokens = (args.image_px // 28) ** 2
        judge(model, processor, [JudgeRequest(pairs[0], 1)], max_new_tokens=4, with_entropy=True, progress=False)

        def timed(requests, batch_size, with_entropy):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            judged = judge(model, processor, requests, max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                           with_entropy=with_entropy, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            return seconds, sum(len(j.token_ids) for j in judged), peak_gib, judged

        rows = []
        for batch_size in args.batch_sizes:
            if time.perf_counter() - started > args.time_budget_s:
                print(f"time budget reached: skipping batch size {batch_size}", flush=True)
                continue
            requests = [JudgeRequest(p, judgement_seed(0, p.id, 0)) for p in pairs[:batch_size]]
            # Warm-up at this batch size (kernel selection, allocator growth) so neither timing pays it.
            timed(requests, batch_size, False)
            plain_s, plain_tokens, plain_peak, plain = timed(requests, batch_size, False)
            scored_s, scored_tokens, scored_peak, scored = timed(requests, batch_size, True)
            same = [a.token_ids for a in plain] == [b.token_ids for b in scored]
            rows.append((batch_size, plain_tokens, plain_s, scored_s, plain_peak, scored_peak, same))
            print(f"batch {batch_size}: plain {plain_tokens / plain_s:.0f} tok/s, with entropy "
                  f"{scored_tokens / scored_s:.0f} tok/s, same tokens: {same}", flush=True)

    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU dry run (tiny widths)"
    print(f"\nScoring throughput, random Qwen2.5-VL-7B-Instruct config ({n_params / 1e9:.2f}B, bf16), {where}; "
          f"{args.max_new_tokens} new tokens, {args.image_px}px images ({visual_tokens} visual tokens), "
          f"one judgement per pair\n")
    print("| batch | new tokens | plain tok/s | with entropy tok/s | entropy overhead | peak GiB plain | "
          "peak GiB with entropy | same tokens |")
    print("|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for batch_size, tokens, plain_s, scored_s, plain_peak, scored_peak, same in rows:
        print(f"| {batch_size} | {tokens} | {tokens / plain_s:.0f} | {tokens / scored_s:.0f} | "
              f"{100 * (scored_s / plain_s - 1):+.1f}% | {plain_peak:.1f} | {scored_peak:.1f} | {same} |")
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Reproduce: python benchmarks/gpu_scoring.py "
          f"--batch-sizes {' '.join(map(str, args.batch_sizes))} --max-new-tokens {args.max_new_tokens} "
          f"--image-px {args.image_px}" + (" --dry-run-cpu" if args.dry_run_cpu else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
