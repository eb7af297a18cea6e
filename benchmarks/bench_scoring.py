"""Scoring speed: `egt score`'s per-pair work (generation + entropy) against plain generation.

    python benchmarks/bench_scoring.py                     # tiny judge, batch sizes 1, 8, 32
    python benchmarks/bench_scoring.py --batch-sizes 8 --repeats 5

Both arms run `egt.generation.judge` on the same requests (same seeds, so the same tokens):
- plain:   with_entropy=False (the seeded sampler still runs: only the entropy is off);
- scoring: `egt.score.score_pairs`, i.e. judge with_entropy=True, then token spans and the
           per-response / per-pair entropies, exactly what each shard of `egt score` computes.
The tiny judge (egt.tiny.build_tiny, untrained) is built in a temporary folder; each arm is
timed `--repeats` times, interleaved, and the fastest run is reported (the machine is shared).
Target (issue 5): scoring wall time <= 1.10x plain generation at batch 8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

try:  # run from a checkout without `pip install -e .`
    import egt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="K judgements per pair")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from egt.data.synth import generate_pairs
    from egt.generation import JudgeRequest, judge, judgement_seed
    from egt.models import load_judge
    from egt.tiny import TinyConfig, build_tiny
    from egt.score import Config, score_pairs

    with tempfile.TemporaryDirectory(prefix="egt-bench-scoring-") as tmp:
        model_dir = build_tiny(TinyConfig(output=Path(tmp) / "tiny", seed=0, pretrain_steps=0))
        pairs = generate_pairs("pool", args.pairs, seed=0, image_dir=Path(tmp) / "images")
        model, processor = load_judge(model_dir)
        requests = [JudgeRequest(p, judgement_seed(0, p.id, k)) for p in pairs for k in range(args.samples)]
        rows = []
        for batch_size in args.batch_sizes:
            cfg = Config(model=str(model_dir), pairs=Path(tmp) / "unused.parquet", output=Path(tmp) / "out",
                         samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                         progress=False)

            def plain():
                return judge(model, processor, requests, max_new_tokens=args.max_new_tokens,
                             batch_size=batch_size, with_entropy=False, progress=False)

            def scoring():
                return score_pairs(model, processor, pairs, cfg)

            plain()  # warm-up (allocator, kernels)
            plain_s, scoring_s = [], []
            for _ in range(args.repeats):
                seconds, judged = _time(plain)
                plain_s.append(seconds)
                seconds, (scored, _) = _time(scoring)
                scoring_s.append(seconds)
            tokens = sum(len(j.token_ids) for j in judged)
            scored_tokens = round(sum(r["n_tokens_mean"] * len(r["completions"]) for r in scored))
            if tokens != scored_tokens:
                raise SystemExit(f"arms generated different tokens ({tokens} vs {scored_tokens}): seeds broken?")
            rows.append((batch_size, min(plain_s), min(scoring_s), tokens))

    print(f"\nScoring vs plain generation, tiny judge (CPU, {torch.get_num_threads()} threads), "
          f"{args.pairs} pairs x K={args.samples}, {args.max_new_tokens} new tokens, best of {args.repeats}\n")
    print("| batch | judgements | tokens | plain s | scoring s | plain tok/s | scoring tok/s | scoring pairs/s | scoring / plain |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch_size, plain_best, scoring_best, tokens in rows:
        print(f"| {batch_size} | {len(requests)} | {tokens} | {plain_best:.2f} | {scoring_best:.2f} | "
              f"{tokens / plain_best:.0f} | {tokens / scoring_best:.0f} | {args.pairs / scoring_best:.2f} | "
              f"{scoring_best / plain_best:.3f}x |")
    print(f"\nReproduce: python benchmarks/bench_scoring.py --pairs {args.pairs} --samples {args.samples} "
          f"--max-new-tokens {args.max_new_tokens} --batch-sizes {' '.join(map(str, args.batch_sizes))} "
          f"--repeats {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
