"""Scoring throughput with exact entropies, Hugging Face vs vLLM backend (`egt score backend=hf|vllm`).

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/bench_scoring_backends.py            # make vllm-env first
    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/bench_scoring_backends.py --pairs 64 --repeats 3

Each repeat runs `egt score` as a fresh subprocess per arm on the same pairs and settings (K = --samples judgements
per pair, the same seeds), in turn, so both arms see the same machine load:
- `hf`: egt's own generation (seeded Gumbel sampling, entropies recorded from the raw logits while generating);
- `vllm`: vLLM generates, then an HF teacher-forced pass over vLLM's token ids gives the exact entropies
  (vllm_entropy=exact: the same numbers an HF pass would give, tests/stages/test_score_vllm.py);
- `vllm-topk` (with --topk): vLLM alone, entropies only bounded by its top-20 log-probs (no HF pass).

Measured per run: the generated tokens (summary.json) over the scoring time (summary.json `scoring_s`: the sum of
the shards' wall times, i.e. generation + entropies, without interpreter start, model load or vLLM's engine start)
and the whole command's wall time (start-up included). The two backends sample from different random streams,
so their completions (and token counts) differ: compare tokens/s, not seconds. Printed: min / median / max over
--repeats, and the command. Model: the shipped pre-trained tiny judge (egt.tiny.build.shipped_base, realistic
lengths) unless --model is given; pairs: egt.data.synth pool pairs (seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:  # run from a checkout without `pip install -e .`
    import egt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ARMS = {"hf": ["backend=hf"], "vllm": ["backend=vllm", "vllm_entropy=exact"],
        "vllm-topk": ["backend=vllm", "vllm_entropy=topk", "vllm_logprobs=20"]}


def score_once(arm: str, model: Path, pairs: Path, out: Path, args) -> dict:
    command = [sys.executable, "-m", "egt.cli", "score", f"model={model}", f"pairs={pairs}", f"output={out}",
               f"samples={args.samples}", f"max_new_tokens={args.max_new_tokens}", f"batch_size={args.batch_size}",
               f"shard_size={args.pairs}", f"dtype={args.dtype}", f"device={args.device}", "progress=false", "seed=0",
               *ARMS[arm]]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{result.stderr[-4000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"tokens": summary["generated_tokens"], "scoring_s": summary["scoring_s"], "wall_s": wall,
            "tokens_per_s": summary["generated_tokens"] / summary["scoring_s"]}


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="judge folder (default: the shipped pre-trained tiny judge)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32, help="HF generate / teacher-forced batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--topk", action="store_true", help="also the vLLM top-k arm (bounds, no HF pass)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (pip install 'egt[vllm]')")
    parser.add_argument("--dtype", default="float32", help="float32 on CPU; bfloat16 on a GPU")
    args = parser.parse_args(argv)

    from egt.data import synth
    from egt.tiny.build import shipped_base

    arms = ["hf", "vllm"] + (["vllm-topk"] if args.topk else [])
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="egt-bench-backends-") as tmp:
        root = Path(tmp)
        model = args.model or shipped_base()
        pairs = synth.run(synth.Config(split="pool", n=args.pairs, seed=0, output=root / "data" / "pool.parquet"))
        for repeat in range(args.repeats):
            for arm in arms:
                runs[arm].append(score_once(arm, model, pairs, root / f"{arm}-{repeat}", args))
                print(f"repeat {repeat + 1}/{args.repeats} {arm}: {runs[arm][-1]['tokens_per_s']:.0f} tokens/s, "
                      f"wall {runs[arm][-1]['wall_s']:.1f} s", flush=True)

    import torch

    print(f"\n`egt score` on {model if args.model else 'the shipped tiny judge'}, {args.pairs} pairs x K = "
          f"{args.samples}, up to {args.max_new_tokens} new tokens, batch {args.batch_size}, {args.device} "
          f"({os.cpu_count()} cores, torch {torch.__version__}); min / median / max of {args.repeats} runs\n")
    print("| backend | entropies | tokens per run | scoring s | tokens/s (scoring) | wall s (whole command) |")
    print("|---|---|---:|---:|---:|---:|")
    kinds = {"hf": "exact (while generating)", "vllm": "exact (HF teacher-forced pass)", "vllm-topk": "top-20 bounds"}
    for arm in arms:
        rows = runs[arm]
        print(f"| {arm} | {kinds[arm]} | {spread([r['tokens'] for r in rows])} | "
              f"{spread([r['scoring_s'] for r in rows], '{:.1f}')} | {spread([r['tokens_per_s'] for r in rows])} | "
              f"{spread([r['wall_s'] for r in rows], '{:.1f}')} |")
    ratio = [v["tokens_per_s"] / h["tokens_per_s"] for v, h in zip(runs["vllm"], runs["hf"])]
    print(f"\nvLLM (exact) / HF tokens/s, per repeat: {', '.join(f'{r:.2f}' for r in ratio)}")
    print(f"Reproduce: VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/bench_scoring_backends.py "
          f"--pairs {args.pairs} --samples {args.samples} --max-new-tokens {args.max_new_tokens} "
          f"--batch-size {args.batch_size} --repeats {args.repeats}" + (" --topk" if args.topk else "")
          + (f" --model {args.model}" if args.model else "")
          + (f" --device {args.device} --dtype {args.dtype}" if args.device != "cpu" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
